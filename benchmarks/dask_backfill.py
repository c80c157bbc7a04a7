"""Benchmark: the backfill flow over N simulated dates, in-process vs on a Dask LocalCluster.

Both sides run the real ``backfill`` flow (fetch, raw, GX Checkpoint with Data Docs, publish) on a
Prefect test harness (a temporary server), each into a fresh local store:

* **local**: no ``dask.address``: Prefect's thread-pool task runner, ``ingest.backfill_concurrency`` dates
  in flight (4 by default);
* **Dask**: ``dask.address`` = a ``distributed.LocalCluster`` of 2 worker processes with 1 thread each on
  127.0.0.1, started before the clock. Its first backfill (``cold``) pays each worker's imports
  (Prefect's task engine, GX: a few seconds each); a second backfill into another fresh store (``warm``)
  shows the steady state.

Each side runs once, in this order, on the same machine; the store contents are checked to be the same
(``tests/test_dask.py`` does it field by field).

    .venv/bin/python benchmarks/dask_backfill.py [--days 6] [--rows 2000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = dt.date(2026, 10, 1)


def run_backfill(home: Path, days: int, address: str | None) -> float:
    from mlcycle.flows.ingest import backfill_flow
    from mlcycle.tasks.settings import get_settings

    os.environ["MLCYCLE_HOME"] = str(home)
    if address:
        os.environ["MLCYCLE_DASK__ADDRESS"] = address
    else:
        os.environ.pop("MLCYCLE_DASK__ADDRESS", None)
    get_settings.cache_clear()
    began = time.perf_counter()
    report = backfill_flow(start=str(START), end=str(START + dt.timedelta(days=days - 1)))
    seconds = time.perf_counter() - began
    assert report.count("validated") == days, report.summary()
    return seconds


def data_files(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "store").rglob("data-*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--rows", type=int, default=2000, help="rows per simulated day")
    args = parser.parse_args()

    for key, value in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                       "GX_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}.items():
        os.environ.setdefault(key, value)
    os.environ["MLCYCLE_CONFIG"] = str(ROOT / "mlcycle.yaml")
    os.environ["MLCYCLE_SIMULATOR__ROWS_PER_DAY"] = str(args.rows)
    sys.path.insert(0, str(ROOT))

    from distributed import LocalCluster
    from prefect.testing.utilities import prefect_test_harness

    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="mlcycle-dask-bench-") as tmp, \
            prefect_test_harness(server_startup_timeout=120), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None) as cluster:
        homes = {side: Path(tmp) / side for side in ("local", "dask-cold", "dask-warm")}
        rows.append(("local (thread pool, 4 dates in flight)", run_backfill(homes["local"], args.days, None)))
        address = cluster.scheduler_address
        rows.append(("Dask LocalCluster 2x1, cold workers", run_backfill(homes["dask-cold"], args.days, address)))
        rows.append(("Dask LocalCluster 2x1, warm workers", run_backfill(homes["dask-warm"], args.days, address)))
        same = data_files(homes["local"]) == data_files(homes["dask-cold"]) == data_files(homes["dask-warm"])

    print(f"\nbackfill of {args.days} dates x {args.rows} rows (simulator), {os.cpu_count()} cores\n")
    print("| side | wall s | s per date |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / args.days:.2f} |")
    print(f"\nsame data files in every store: {same}")


if __name__ == "__main__":
    main()
