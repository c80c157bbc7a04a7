"""Benchmark: what the inference log's write-ahead journal costs on the request path, side by side in one run.

``InferenceLogWriter.submit`` with ``journal: false`` (the baseline: an append to the in-memory queue) and with
``journal: true`` (the same plus one JSON record written to the worker's journal segment before the request is
answered, tasks/inference_journal.py), for one-row and 1,000-row requests of a 20-feature table (15 numeric
with gaps, 5 categorical) and a multiclass answer (every class's probability). The writer thread runs as in
serving (flush every 5 s), so the figure includes its competition for the GIL; the store is a local folder.
Also the replay: how fast a dead worker's journal becomes Parquet parts again.

    .venv/bin/python benchmarks/journal.py [--requests 20000] [--json journal.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlcycle.tasks.inference_log import InferenceLogWriter  # noqa: E402 - after the path insert
from mlcycle.tasks.settings import FeatureSpec  # noqa: E402
from mlcycle.tasks.storage import LocalStore  # noqa: E402

CLASSES = 4
FEATURES = [FeatureSpec(name=f"x{i}", kind="numeric", nullable=True) for i in range(15)] + \
    [FeatureSpec(name=f"c{i}", kind="categorical", categories=["a", "b", "c"], nullable=True) for i in range(5)]


def request(rows: int, rng) -> tuple[dict, dict]:
    columns = {f.name: (rng.normal(size=rows) if f.kind == "numeric" else
                        np.array(rng.choice(["a", "b", "c"], rows), dtype=object)) for f in FEATURES}
    proba = rng.dirichlet(np.ones(CLASSES), rows)
    return columns, {"label": np.array([f"k{i}" for i in proba.argmax(axis=1)], dtype=object),
                     "probability": proba.max(axis=1), "probabilities": proba}


def writer(root: Path, journal: bool) -> InferenceLogWriter:
    return InferenceLogWriter(LocalStore(root / "store"), model="bench", model_version=1, features=FEATURES,
                              id_column="rid", spill_dir=root / "spill", task="multiclass", queue_rows=10_000_000,
                              flush_rows=10_000_000, flush_interval_seconds=5.0, journal=journal)


def measure(root: Path, journal: bool, rows: int, requests: int) -> dict:
    rng = np.random.default_rng(0)
    bodies = [request(rows, rng) for _ in range(min(requests, 200))]
    log = writer(root, journal).start()
    ids = [f"r{i}" for i in range(rows)]
    times = []
    for i in range(requests):
        columns, predictions = bodies[i % len(bodies)]
        t = time.perf_counter()
        log.submit(f"req-{i}", "predict", columns, ids, predictions)
        times.append(time.perf_counter() - t)
    log.close()
    times.sort()
    return {"journal": journal, "rows": rows, "requests": requests,
            "mean_us": round(statistics.fmean(times) * 1e6, 1),
            "p50_us": round(times[len(times) // 2] * 1e6, 1), "p99_us": round(times[int(len(times) * 0.99)] * 1e6, 1)}


def replay(root: Path, requests: int) -> dict:
    """A writer dies with ``requests`` one-row requests journaled; the next one replays them."""
    dead = writer(root, True)
    rng = np.random.default_rng(1)
    columns, predictions = request(1, rng)
    for i in range(requests):
        dead.submit(f"req-{i}", "predict", columns, ["r0"], predictions)
    dead._journal.current.release()  # what the kernel does when the process dies
    t = time.perf_counter()
    status = writer(root, True).start().close()
    seconds = time.perf_counter() - t
    return {"requests": requests, "replayed_rows": status.recovered_rows, "seconds": round(seconds, 2),
            "rows_per_s": round(status.recovered_rows / seconds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="one-row requests per run (1,000-row: /20)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="mlcycle-bench-journal-") as tmp:
        for rows, requests in ((1, args.requests), (1000, max(50, args.requests // 20))):
            for journal in (False, True):
                results.append(measure(Path(tmp) / f"{rows}-{journal}", journal, rows, requests))
        replayed = replay(Path(tmp) / "replay", args.requests)
    print("| request rows | journal | requests | submit mean | p50 | p99 |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rows']:,} | {'on' if r['journal'] else 'off'} | {r['requests']:,} | {r['mean_us']} us | "
              f"{r['p50_us']} us | {r['p99_us']} us |")
    print(f"\nreplay of a dead writer's journal: {replayed['replayed_rows']:,} rows of {replayed['requests']:,} "
          f"requests in {replayed['seconds']} s ({replayed['rows_per_s']:,} rows/s)")
    if args.json:
        args.json.write_text(json.dumps({"submit": results, "replay": replayed}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
