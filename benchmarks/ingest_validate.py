"""Benchmark: one 1,000,000-row daily batch ingested and validated, mlcycle vs a plain baseline.

Both sides start from the same batch (simulated once, loaded from a Parquet file in each measuring
process) and end with a validated Parquet file on local disk:

* **mlcycle**: ``write_raw`` (deterministic Parquet + manifest in the local object store) ->
  ``validate_raw`` (re-read with sha256 check, the generated GX suite through a real Checkpoint, result
  JSON and Data Docs uploaded) -> ``publish`` (copy to validated/, manifest last).
* **baseline**: ``pyarrow.parquet.write_table`` of the raw batch, the same checks written by hand in
  pandas (columns, types, nulls, ranges, categories, unique ids, row bounds), then the validated copy.

Each side runs in its own fresh process, once to warm up (imports, first-call costs) and then timed
``--repeat`` times; peak memory is sampled from the process RSS every 5 ms during the timed run and
reported both as the process peak and as the increase over the RSS just before the work (the batch is
already in memory then). The batch's in-memory size is ``DataFrame.memory_usage(deep=True)``.

    .venv/bin/python benchmarks/ingest_validate.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLCYCLE_CONFIG", str(ROOT / "mlcycle.yaml"))
DAY = dt.date(2026, 10, 1)


class PeakRSS:
    """Samples this process's RSS in a thread; ``peak`` is the maximum seen while running."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.start_rss = self._proc.memory_info().rss
        self.peak = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def run_mlcycle(frame, work: Path) -> None:
    from mlcycle.tasks.batch import Batch
    from mlcycle.tasks.ingest import publish, validate_raw, write_raw
    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.storage import LocalStore

    settings = load_settings(home=work / "home")
    store = LocalStore(settings.store_root)
    raw = write_raw(store, settings, DAY, Batch(frame=frame, kind="benchmark"))
    outcome = validate_raw(store, settings, raw.ref())
    manifest = publish(store, outcome)
    assert manifest.zone == "validated", outcome.summary


def run_baseline(frame, work: Path) -> None:
    import shutil

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlcycle.tasks.settings import load_settings

    spec = load_settings(home=work / "home").dataset
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "raw.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), raw, compression="zstd")
    failures = []
    if set(frame.columns) != set(spec.columns):
        failures.append("columns")
    if not spec.min_rows_per_batch <= len(frame) <= spec.max_rows_per_batch:
        failures.append("rows")
    ids = frame[spec.id_column]
    if ids.isna().any() or not ids.is_unique:
        failures.append("ids")
    ts = frame[spec.timestamp_column]
    if ts.isna().any() or not pd.api.types.is_datetime64_any_dtype(ts):
        failures.append("timestamp")
    target = frame[spec.target]
    if target.isna().any() or not target.isin([0, 1]).all():
        failures.append("target")
    for f in spec.features:
        col = frame[f.name]
        if not f.nullable and col.isna().any():
            failures.append(f"{f.name} nulls")
        if f.kind == "numeric":
            if not pd.api.types.is_numeric_dtype(col):
                failures.append(f"{f.name} type")
                continue
            values = col.dropna()
            if f.dtype == "int" and not (values == values.round()).all():
                failures.append(f"{f.name} whole")
            if (f.min is not None and (values < f.min).any()) or (f.max is not None and (values > f.max).any()):
                failures.append(f"{f.name} range")
        else:
            if not pd.api.types.is_string_dtype(col):
                failures.append(f"{f.name} type")
            if not col.dropna().isin(f.categories).all():
                failures.append(f"{f.name} categories")
    assert not failures, failures
    (work / "validated").mkdir(exist_ok=True)
    shutil.copyfile(raw, work / "validated" / "data.parquet")


def measure(side: str, batch_path: str, repeat: int) -> dict:
    """Runs in a fresh process: load the batch, warm up once, then time ``repeat`` runs."""
    import pyarrow.parquet as pq

    frame = pq.read_table(batch_path).to_pandas()
    fn = run_mlcycle if side == "mlcycle" else run_baseline
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fn(frame, Path(tmp) / "warmup")
        first = time.perf_counter() - t0
    times, peaks, extras = [], [], []
    for i in range(repeat):
        with tempfile.TemporaryDirectory() as tmp, PeakRSS() as rss:
            t0 = time.perf_counter()
            fn(frame, Path(tmp) / f"run{i}")
            times.append(time.perf_counter() - t0)
        peaks.append(rss.peak)
        extras.append(rss.peak - rss.start_rss)
    return {"side": side, "first_run_s": first, "best_s": min(times), "median_s": sorted(times)[len(times) // 2],
            "peak_rss_mb": max(peaks) / 1e6, "peak_extra_mb": max(extras) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--measure", choices=["mlcycle", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--batch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.batch, args.repeat)))
        return

    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.simulator import simulate_batch

    settings = load_settings(home=Path(tempfile.mkdtemp()))
    frame = simulate_batch(DAY, settings.simulator, settings.dataset, rows=args.rows).frame
    batch_mb = frame.memory_usage(deep=True).sum() / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        batch_path = str(Path(tmp) / "batch.parquet")
        frame.to_parquet(batch_path)
        del frame
        results = {}
        for side in ("baseline", "mlcycle"):
            out = subprocess.run([sys.executable, __file__, "--measure", side, "--batch", batch_path,
                                  "--repeat", str(args.repeat)], capture_output=True, text=True,
                                 env={**os.environ, "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
            if out.returncode != 0:
                sys.exit(f"{side} measurement failed:\n{out.stderr[-3000:]}")
            results[side] = json.loads(out.stdout.strip().splitlines()[-1])

    base, ours = results["baseline"], results["mlcycle"]
    print(f"\n{args.rows:,} rows, batch in memory {batch_mb:.0f} MB, best of {args.repeat} warm runs\n")
    print("| side | first run (cold) s | best s | median s | peak RSS MB | peak over start MB |")
    print("|---|---|---|---|---|---|")
    for r in (base, ours):
        print(f"| {r['side']} | {r['first_run_s']:.2f} | {r['best_s']:.2f} | {r['median_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_extra_mb']:.0f} |")
    ratio = ours["best_s"] / base["best_s"]
    mem_ratio = ours["peak_extra_mb"] / batch_mb
    print(f"\ntime ratio mlcycle/baseline: {ratio:.2f}x (target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})")
    print(f"peak memory over start / batch size: {mem_ratio:.2f}x "
          f"(target <= 3x: {'met' if mem_ratio <= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
