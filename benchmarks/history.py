"""Benchmark: monitor and status time as history grows, 1 day vs 60 days of inference, labels and decisions.

Issue 14's target: the bounded reads keep both flat (60-day time / 1-day time <= 1.2). For each history
length a fresh local store is filled with, per day, ``--rows`` inference-log rows (20 requests, through the
real ``InferenceLogWriter``), their labels (filed under the day they arrived, as ``mlcycle labels`` does) and
24 hourly monitoring decisions (``save_decision``, which moves the latest-decision pointer). Then, in the same
process, best of ``--repeat``:

* **status**: ``last_decision`` (what ``mlcycle status`` reads), and beside it the read it replaced (every
  decision ever written, parsed, the newest kept);
* **monitor**: what one monitor run does with the store for the last 24 h: ``evaluate`` (window rows with
  labels joined, drift, live performance), the HTML report drawn from the computed counts, and the decision
  saved; beside it the reads it replaced (every labels part ever written joined, and the window read a
  second time for the plots).

    .venv/bin/python benchmarks/history.py [--days 1 60] [--rows 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import offline_environment  # noqa: E402 - after the path insert

offline_environment()


def build(home: Path, days: int, rows: int, end: dt.datetime):
    import numpy as np
    import pandas as pd

    from mlcycle.tasks.inference_log import InferenceLogWriter
    from mlcycle.tasks.labels import write_labels
    from mlcycle.tasks.monitor.trigger import save_decision
    from mlcycle.tasks.monitor.window import window_for
    from mlcycle.tasks.records.monitoring import DriftDecision, MonitorReport
    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.storage import open_store
    from tests.support.inference import columns

    settings = load_settings(home=home)
    spec, store = settings.dataset, open_store(settings)
    log = InferenceLogWriter(store, model="bench", model_version=1, features=spec.features, id_column=spec.id_column,
                             spill_dir=home / "spill", queue_rows=10 * rows, flush_rows=rows,
                             flush_interval_seconds=3600).start()
    rng = np.random.default_rng(0)
    per_request = rows // 20
    for day in range(days):
        day_end = end - dt.timedelta(days=day)
        labels = []
        for r in range(20):
            ts = day_end - dt.timedelta(minutes=int(rng.integers(1, 24 * 60 - 1)))
            request_id = f"d{day}-r{r}"
            p = rng.uniform(0, 1, per_request)
            log.submit(request_id, "predict", columns(spec, per_request, seed=day * 100 + r),
                       [f"id-{request_id}-{i}" for i in range(per_request)],
                       {"probability": p, "label": (p >= 0.5).astype(np.int64)}, ts=ts)
            labels.append(pd.DataFrame({"request_id": request_id, "row": np.arange(per_request),
                                        spec.target: (rng.uniform(0, 1, per_request) < p).astype(int)}))
        log.flush()
        write_labels(store, spec, pd.concat(labels, ignore_index=True), now=day_end - dt.timedelta(minutes=1))
        for hour in range(24):
            window = window_for("bench", 1, 24, day_end - dt.timedelta(hours=hour))
            decision = DriftDecision(enough_data=True, rows=rows, min_rows=500, dataset_drift=False)
            save_decision(store, MonitorReport(window_id=window.window_id, window=window, rows=rows,
                                               drift=decision, performance=None, reasons=[]))
    log.close()
    return settings, store


def profile_for(settings):
    import numpy as np

    from mlcycle.tasks.profile import build_profile
    from mlcycle.tasks.simulator import simulate_batch

    spec = settings.dataset
    reference = simulate_batch(dt.date(2026, 10, 1), settings.simulator, spec, rows=4000).frame
    return build_profile(reference, spec.features, reference[spec.target].to_numpy(), np.linspace(0, 1, 4000),
                         dataset=spec.name, dataset_schema_hash=spec.schema_hash(), n_bins=10,
                         created_at=dt.datetime.now(dt.UTC), sample_size=settings.drift.reference_sample_size)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(days: int, rows: int, repeat: int, root: Path) -> dict:
    from mlcycle.tasks.inference_reader import join_labels
    from mlcycle.tasks.labels import read_labels
    from mlcycle.tasks.monitor.report import render_html
    from mlcycle.tasks.monitor.trigger import DECISIONS, last_decision, save_decision
    from mlcycle.tasks.monitor.window import evaluate, window_for, window_rows
    from mlcycle.tasks.records.monitoring import MonitorReport

    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    settings, store = build(root / f"h{days}", days, rows, end)
    profile = profile_for(settings)
    monitor = settings.monitor.model_copy(update={"performance_metric": "roc_auc", "min_labelled_rows": 100})
    window = window_for("bench", 1, 24, end)
    metrics = {"roc_auc": 0.75, "threshold": 0.5}

    def monitor_run():
        report = evaluate(store, window, profile, metrics, settings.dataset, settings.drift, monitor)
        render_html(report, profile, {})
        save_decision(store, report)
        return report

    def monitor_old_reads():  # what the run read before: every labels part, and the window again for plots
        join_labels(window_rows(store, window, settings.dataset), read_labels(store, None), settings.dataset)
        window_rows(store, window, settings.dataset)

    def status_old():
        reports = [MonitorReport.model_validate_json(store.get_bytes(k)) for k in store.list(DECISIONS)]
        return max(reports, key=lambda r: r.window.end)

    report = monitor_run()
    assert report.rows == rows and report.performance.labelled_rows == rows, (report.rows, report.performance)
    assert last_decision(store).window.end == end
    return {"days": days, "status": best(lambda: last_decision(store), repeat),
            "status_old": best(status_old, repeat), "monitor": best(monitor_run, repeat),
            "monitor_old_extra": best(monitor_old_reads, repeat), "decisions": len(store.list(DECISIONS)),
            "label_parts": len(store.list("labels/"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, nargs=2, default=[1, 60])
    parser.add_argument("--rows", type=int, default=2000, help="inference rows (and labels) per day")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlcycle-history-") as tmp:
        results = [measure(d, args.rows, args.repeat, Path(tmp)) for d in args.days]
    short, long = results
    print(f"\n{args.rows} inference rows and labels per day, 24 decisions per day; best of {args.repeat}\n")
    print("| history | decisions | labels parts | status ms | status ms, old read | monitor s | "
          "old extra reads s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['days']} days | {r['decisions']} | {r['label_parts']} | {r['status'] * 1000:.2f} | "
              f"{r['status_old'] * 1000:.1f} | {r['monitor']:.3f} | {r['monitor_old_extra']:.3f} |")
    print(f"\nratio {long['days']} / {short['days']} days: status {long['status'] / short['status']:.2f}, "
          f"monitor {long['monitor'] / short['monitor']:.2f} (target <= 1.2); old status read "
          f"{long['status_old'] / short['status_old']:.1f}x, old extra reads "
          f"{long['monitor_old_extra'] / short['monitor_old_extra']:.1f}x")


if __name__ == "__main__":
    main()
