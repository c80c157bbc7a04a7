"""Benchmark: what an `mlcycle` command costs beyond its own work, before and after issue 13's CLI changes.

Two checkouts side by side, in one run, on copies of one store: **before** is the commit ``395068b`` (every
flow command starts Prefect's temporary server, every command imports Prefect), in a second checkout with its
own virtualenv; **after** is this checkout (flow commands use the local stack's Prefect server, started once
in the background by the first of them; commands that run no flow import no Prefect). Make the second
checkout once::

    git worktree add --detach /tmp/cli-before 395068b && (cd /tmp/cli-before && make install)
    .venv/bin/python benchmarks/cli_overhead.py --before /tmp/cli-before [--rounds 5]

Neither side sees a ``PREFECT_API_URL``: a user's shell, no `mlcycle up`. The store both sides start from is
made once by this checkout: 8 simulated days validated, a champion trained on them, and 1,500 logged
predictions a day for 3 days, so ``monitor`` has a window with enough rows (no drift: it decides and writes its
report, starting no training).

Measured, each command a fresh process timed from outside (monotonic clock around ``subprocess.run``), before
and after in turn (A B A B ...) so a machine that speeds up or slows down affects both:

* ``models list`` and ``status``: they run no flow, so their whole wall time is overhead. ``status`` twice: before
  any flow command (no Prefect server anywhere), and once the after side's server runs (it then asks the
  Prefect API for the schedules' next and last runs, through Prefect's client; the before side never has a
  server to ask);
* ``ingest --date D`` (a new date each round, the same dates on both sides) and ``monitor --hours 24 --end E``:
  overhead = wall time - the flow run's own duration, read from Prefect's record of it (``start_time`` to
  ``end_time`` of the newest top-level flow run in the SQLite database the command's server wrote).

The after side's first flow command also starts the stack's server; that one-time start is reported on its
own line and kept out of the medians. Medians over the rounds; min and max show the spread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAYS = [dt.date(2026, 10, 2) + dt.timedelta(days=i) for i in range(8)]
LOGGED = [dt.date(2026, 10, 10) + dt.timedelta(days=i) for i in range(3)]
MONITOR_END = "2026-10-12T00:00:00+00:00"  # the window 2026-10-11, logged above, before the demo's drift date


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLCYCLE_"))}
    # MLCYCLE_STORE_PREFIX="": keys at the store's root, the layout the before side (no project prefixes) reads
    env.update({"MLCYCLE_HOME": str(home), "MLCYCLE_STORE_PREFIX": "", "MLCYCLE_SIMULATOR__ROWS_PER_DAY": "300",
                "DO_NOT_TRACK": "1",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "BENTOML_DO_NOT_TRACK": "true",
                "GX_ANALYTICS_ENABLED": "false", **extra})
    return env


def run(checkout: Path, env: dict, *args: str, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    argv = [str(checkout / ".venv" / "bin" / "mlcycle"), *args]
    start = time.monotonic()
    done = subprocess.run(argv, cwd=checkout, env={**env, "MLCYCLE_CONFIG": str(checkout / "mlcycle.yaml")},
                          capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - start
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} in {checkout} exited {done.returncode}: {done.stderr[-1500:]}")
    return wall, done


def make_store(template: Path) -> None:
    """8 validated days, a champion, 3 days of logged predictions: the store both sides copy."""
    env = environment(template, MLCYCLE_PREFECT_PORT=str(free_port()))
    try:
        run(ROOT, env, "ingest", "--start", str(DAYS[0]), "--end", str(DAYS[-1]))
        run(ROOT, env, "train", "--days", "8", "--n-iter", "2")
    finally:
        run(ROOT, env, "down", check=False)
    script = (
        "import datetime as dt, sys\n"
        "from pathlib import Path\n"
        "from mlcycle.tasks.registry.versions import load_model\n"
        "from mlcycle.tasks.settings import get_settings\n"
        "from mlcycle.tasks.storage import open_store\n"
        "from mlcycle.tasks.traffic import log_in_process\n"
        "from mlcycle.tasks.registry.versions import model_name\n"
        "s = get_settings(); store = open_store(s)\n"
        "days = [dt.date.fromisoformat(d) for d in sys.argv[1:]]\n"
        "log_in_process(store, s, load_model(store, model_name(s), 'champion'), days, rows_per_day=1500,\n"
        "               spill_dir=Path(s.home) / 'spill')\n")
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", script, *map(str, LOGGED)], check=True, cwd=ROOT,
                   env={**env, "MLCYCLE_CONFIG": str(ROOT / "mlcycle.yaml")})
    for leftover in ("prefect", "run", "spill"):
        shutil.rmtree(template / leftover, ignore_errors=True)


def last_flow_seconds(database: Path) -> float:
    """Duration of the newest top-level flow run in a Prefect SQLite database (start_time to end_time)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as db:
        start, end = db.execute("SELECT start_time, end_time FROM flow_run WHERE parent_task_run_id IS NULL "
                                "ORDER BY created DESC LIMIT 1").fetchone()
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


class Side:
    def __init__(self, name: str, checkout: Path, home: Path, database: Path, env: dict) -> None:
        self.name, self.checkout, self.home, self.database, self.env = name, checkout, home, database, env
        self.samples: dict[str, list[tuple[float, float | None]]] = {}

    def measure(self, label: str, *args: str, flow: bool) -> tuple[float, float | None]:
        wall, _ = run(self.checkout, self.env, *args)
        work = last_flow_seconds(self.database) if flow else None
        self.samples.setdefault(label, []).append((wall, work))
        return wall, work


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, default=Path("/tmp/cli-before"), help="checkout of 395068b, installed")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    args = parser.parse_args()
    if not (args.before / ".venv" / "bin" / "mlcycle").is_file():
        sys.exit(f"no installed checkout at {args.before}: git worktree add --detach {args.before} 395068b && "
                 f"(cd {args.before} && make install)")

    work = Path(tempfile.mkdtemp(prefix="cli-overhead-"))
    try:
        template = work / "template"
        print("making the store (8 days, a champion, 3 logged days) ...", file=sys.stderr)
        make_store(template)
        sides = []
        for name, checkout in (("before (395068b)", args.before), ("after", ROOT)):
            home = work / name.split()[0]
            shutil.copytree(template, home)
            if name == "after":
                env = environment(home, MLCYCLE_PREFECT_PORT=str(free_port()))
                database = home / "prefect" / "prefect.db"  # the stack's server (tasks/stack.py)
            else:
                env = environment(home, PREFECT_HOME=str(home / "prefect-client"))
                database = home / "prefect-client" / "prefect.db"  # what each temporary server writes to
            sides.append(Side(name, checkout, home, database, env))
        before, after = sides

        for _ in range(args.rounds):  # before any flow command: no Prefect server runs on either side
            for side in sides:
                side.measure("status, no server up", "status", flow=False)
        first_wall, _ = run(after.checkout, after.env, "ingest", "--date", "2026-09-01")  # starts the server
        first_work = last_flow_seconds(after.database)
        for side in sides:  # one warm-up of each command (page cache, .pyc), not counted
            run(side.checkout, side.env, "models", "list")
            run(side.checkout, side.env, "monitor", "--hours", "24", "--end", MONITOR_END)
        for i in range(args.rounds):
            day = str(dt.date(2026, 9, 2) + dt.timedelta(days=i))
            for side in sides:
                side.measure("models list", "models", "list", flow=False)
                side.measure("status, server up", "status", flow=False)
                side.measure("ingest --date", "ingest", "--date", day, flow=True)
                side.measure("monitor", "monitor", "--hours", "24", "--end", MONITOR_END, flow=True)
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        run(ROOT, environment(work / "after", MLCYCLE_PREFECT_PORT="0"), "down", check=False)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.rounds} rounds, median (min-max) seconds\n")
    print("| command | side | wall s | flow run s | overhead s |")
    print("|---|---|---|---|---|")
    for label in ("models list", "status, no server up", "status, server up", "ingest --date", "monitor"):
        for side in sides:
            samples = side.samples[label]
            walls = [w for w, _ in samples]
            if samples[0][1] is None:
                print(f"| `{label}` | {side.name} | {spread(walls)} | - | {spread(walls)} |")
            else:
                flows = [f for _, f in samples]
                print(f"| `{label}` | {side.name} | {spread(walls)} | {spread(flows)} | "
                      f"{spread([w - f for w, f in samples])} |")
    print(f"\nafter, first flow command (starts the stack's Prefect server once): wall {first_wall:.2f} s, "
          f"flow run {first_work:.2f} s, overhead {first_wall - first_work:.2f} s")


if __name__ == "__main__":
    main()
