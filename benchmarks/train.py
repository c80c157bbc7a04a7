"""Benchmark: the training flow on 1,000,000 rows vs the same scikit-learn code in a plain script.

All sides read the same validated partitions (``--rows`` rows over ``--days`` simulated days, written
once into a template store and copied for each run), train the same family with the same search
budget, seed and ``n_jobs=2``, and score the same test window:

* **flow**: ``train_flow()`` under Prefect (ephemeral API server, started by a warm-up flow run that is
  not timed): select-window -> train-challenger -> score-champion -> gate -> register -> promote ->
  report artifacts.
* **plain mlcycle**: the very same plain functions called in sequence, no Prefect. The difference
  between these two is the orchestration overhead (target: under 10%).
* **bare scikit-learn**: ``pandas.read_parquet`` of the same files, the same time split written by
  hand, the same ``Pipeline`` and ``RandomizedSearchCV``, test ROC AUC, ``joblib.dump``. What mlcycle
  adds on top (verified reads, slices, permutation importance, reference profile, plots, registry with
  lineage) is the difference between plain mlcycle and this.
* **search speed-up** (``--part search``): the hyper-parameter search alone on the same split, with 1
  and 2 loky workers of one thread each, and with 1 worker whose fits use OpenMP on every core (the
  libraries' default).

Every run is a fresh process (imports and, for the flow, the Prefect server warmed up first, not
timed); plain and flow alternate ``--repeat`` times and the best wall time is reported. Wall time and
CPU time (the process, its loky workers and the Prefect server) are both reported: on a shared machine
other load stretches the wall clock, not the CPU work. ``--threads-per-fit`` (default 1) caps OpenMP
threads per fit on every side, as ``training.threads_per_fit`` does. The first training of a model has
no champion, so every side does the same work.

    .venv/bin/python benchmarks/train.py [--rows 1000000] [--days 10] [--n-iter 4] [--repeat 2]
        [--family hist_gradient_boosting] [--threads-per-fit 1] [--part all|training|search] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLCYCLE_CONFIG", str(ROOT / "mlcycle.yaml"))
START = dt.date(2026, 10, 1)


def training_overrides(args) -> dict:
    out = {"family": args.family, "n_iter": args.n_iter, "n_jobs": 2, "window_days": args.days}
    if args.threads_per_fit:
        out["threads_per_fit"] = args.threads_per_fit
    return out


# --------------------------------------------------------------------------------------------------
# data: validated partitions written straight into a store (validation is benchmarked elsewhere)
# --------------------------------------------------------------------------------------------------


def make_template(root: Path, rows: int, days: int) -> None:
    from mlcycle.tasks.partitions import data_key, frame_to_parquet, write_partition
    from mlcycle.tasks.records.data import PartitionManifest, SourceRecord
    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.simulator import simulate_batch
    from mlcycle.tasks.storage import LocalStore, sha256_bytes

    settings = load_settings(home=root)
    store = LocalStore(settings.store_root)
    per_day = rows // days
    for i in range(days):
        day = START + dt.timedelta(days=i)
        frame = simulate_batch(day, settings.simulator, settings.dataset, rows=per_day).frame
        data, schema_hash = frame_to_parquet(frame)
        digest = sha256_bytes(data)
        write_partition(store, PartitionManifest(
            dataset=settings.dataset.name, zone="validated", date=day, data_key=data_key("validated", day, digest),
            data_sha256=digest, data_bytes=len(data), rows=len(frame), columns=list(frame.columns),
            schema_hash=schema_hash, dataset_schema_hash=settings.dataset.schema_hash(),
            source=SourceRecord(kind="simulator"), logical_date=day, ingested_at=dt.datetime.now(dt.UTC)), data)


# --------------------------------------------------------------------------------------------------
# the sides (each in its own process)
# --------------------------------------------------------------------------------------------------


def side_flow(home: Path, args) -> dict:
    os.environ["MLCYCLE_HOME"] = str(home)
    for key, value in training_overrides(args).items():
        os.environ[f"MLCYCLE_TRAINING__{key.upper()}"] = str(value)
    from prefect import flow

    from mlcycle.flows.train import train_flow
    from mlcycle.tasks.settings import get_settings

    get_settings.cache_clear()

    @flow(name="warm-up")
    def warm_up() -> None:
        return None

    started = time.perf_counter()
    warm_up()
    server_seconds = time.perf_counter() - started
    _warm_imports()
    with Usage() as usage:
        outcome = train_flow()
    return {"seconds": usage.wall, "cpu_seconds": usage.cpu, "server_start_seconds": server_seconds,
            "roc_auc": outcome.metrics.roc_auc, "version": outcome.version, "promoted": outcome.promoted}


def side_plain(home: Path, args) -> dict:
    from mlcycle.tasks.evaluation.gate import decide
    from mlcycle.tasks.registry.aliases import promote
    from mlcycle.tasks.registry.registration import register_candidate
    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.storage import open_store
    from mlcycle.tasks.training.challenger import compare_with_champion, train_challenger
    from mlcycle.tasks.training.window import select_window

    settings = load_settings(home=home, training=training_overrides(args))
    _warm_imports()
    with Usage() as usage:
        store = open_store(settings)
        window = select_window(store, days=settings.training.window_days)
        candidate = train_challenger(store, settings, window)
        comparison = compare_with_champion(store, settings, candidate)
        decision = decide(settings.gate, candidate, comparison)
        version = register_candidate(store, candidate, comparison, decision)
        if decision.promote:
            promote(store, version.name, version.version, reason="benchmark", expected_champion=None)
    return {"seconds": usage.wall, "cpu_seconds": usage.cpu, "roc_auc": version.metrics.roc_auc,
            "steps": candidate.seconds}


def side_bare(home: Path, args) -> dict:
    """The same scikit-learn code, written as a plain script: no mlcycle functions beyond the pipeline."""
    import glob

    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV

    from mlcycle.tasks.features import build_pipeline, search_distributions
    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.training.search import fit_threads, search_backend
    from mlcycle.tasks.training.window import labels

    settings = load_settings(home=home, training=training_overrides(args))
    spec, training = settings.dataset, settings.training
    family = training.families[training.family]
    features = [spec.feature(n) for n in spec.feature_names]
    _warm_imports()
    with Usage() as usage:
        files = sorted(glob.glob(str(settings.store_root / "validated" / "date=*" / "data-*.parquet")))
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        frame = frame.sort_values([spec.timestamp_column, spec.id_column], kind="mergesort").reset_index(drop=True)
        day = frame[spec.timestamp_column].dt.floor("D")
        days = sorted(day.unique())
        n_test = max(1, round(len(days) * training.test_fraction))
        n_val = max(1, round(len(days) * training.validation_fraction))
        val_start, test_start = days[len(days) - n_test - n_val], days[len(days) - n_test]
        fit_rows, test = frame[day < test_start], frame[day >= test_start]
        y_fit = labels(fit_rows, spec)
        y_test = labels(test, spec)
        cv = PredefinedSplit(np.where(day[day < test_start] < val_start, -1, 0))
        search = RandomizedSearchCV(build_pipeline(features, family, training.seed, task=spec.task),
                                    search_distributions(family),
                                    n_iter=training.n_iter, scoring="roc_auc", cv=cv, n_jobs=training.n_jobs,
                                    random_state=training.seed, refit=True, error_score="raise")
        with fit_threads(training), search_backend(training, settings.dask):  # the same thread caps as the other sides
            search.fit(fit_rows[spec.feature_names], y_fit)
            scores = search.best_estimator_.predict_proba(test[spec.feature_names])[:, 1]
        roc_auc = float(roc_auc_score(y_test, scores))
        joblib.dump(search.best_estimator_, home / "model.joblib", compress=3)
    return {"seconds": usage.wall, "cpu_seconds": usage.cpu, "roc_auc": roc_auc}


def side_search(home: Path, args) -> dict:
    from threadpoolctl import threadpool_limits

    from mlcycle.tasks.features import build_pipeline, resolve_family, training_features
    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.storage import open_store
    from mlcycle.tasks.training.search import run_search
    from mlcycle.tasks.training.window import labels, load_rows, select_window, time_split

    settings = load_settings(home=home, training=training_overrides(args))
    store = open_store(settings)
    window = select_window(store, days=settings.training.window_days)
    frame = load_rows(store, settings.dataset, window.partitions)
    _, frames = time_split(frame, settings.dataset, settings.training, window.partitions)
    y = {k: labels(v, settings.dataset) for k, v in frames.items()}
    features = training_features(settings)
    _, family = resolve_family(settings, None)
    out = {}
    for label, n_jobs, threads in (("1 worker, 1 thread", 1, 1), ("2 workers, 1 thread each", 2, 1),
                                   ("1 worker, OpenMP on every core", 1, None)):
        training = settings.training.model_copy(update={"n_jobs": n_jobs, "threads_per_fit": threads})
        with threadpool_limits(threads) if threads else nullcontext(), Usage() as usage:
            _, summary = run_search(build_pipeline(features, family, training.seed, task=settings.dataset.task),
                                    family, frames, y, features, training, settings.dask, scoring="roc_auc",
                                    n_iter=training.n_iter, seed=training.seed)
        out[label] = {"seconds": summary.seconds, "cpu_seconds": usage.cpu, "best_score": summary.best_score}
    return out


class Usage:
    """Wall time and CPU time (this process, its live descendants, and reaped children) of a block.

    CPU seconds are the robust figure on a shared machine: other load stretches the wall clock, not the
    work done. The Prefect API server and loky workers are descendants, so their work is included.
    """

    def __enter__(self) -> Usage:
        self._wall, self._cpu = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)  # reap the workers so their CPU time is counted
        self.wall = time.perf_counter() - self._wall
        self.cpu = _cpu_seconds() - self._cpu


def _cpu_seconds() -> float:
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def _warm_imports() -> None:
    """First-call costs that are not training: sklearn, matplotlib, pyarrow."""
    import matplotlib.figure  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import sklearn.model_selection  # noqa: F401


SIDES = {"flow": side_flow, "plain": side_plain, "bare": side_bare, "search": side_search}


def run_side(side: str, template: Path, work: Path, args) -> dict:
    home = work / side
    shutil.copytree(template / "store", home / "store")
    env = dict(os.environ, PREFECT_HOME=str(work / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", PREFECT_LOGGING_LEVEL="WARNING")
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, __file__, "--side", side, "--home", str(home), "--rows", str(args.rows),
           "--days", str(args.days), "--n-iter", str(args.n_iter), "--family", args.family,
           "--threads-per-fit", str(args.threads_per_fit)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"side {side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--n-iter", type=int, default=4)
    parser.add_argument("--family", default="hist_gradient_boosting")
    parser.add_argument("--threads-per-fit", type=int, default=1,
                        help="training.threads_per_fit for every side (0: no cap, the libraries' default)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of plain and of flow (best is reported)")
    parser.add_argument("--part", choices=("all", "training", "search"), default="all",
                        help="measure only the training runs or only the search speed-up")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side:
        print(json.dumps(SIDES[args.side](args.home, args)))
        return

    with tempfile.TemporaryDirectory(prefix="mlcycle-bench-train-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        make_template(work / "template", args.rows, args.days)
        print(f"data: {args.rows:,} rows over {args.days} validated days written in "
              f"{time.perf_counter() - started:.1f}s; family {args.family}, n_iter {args.n_iter}, n_jobs 2, "
              f"threads_per_fit {args.threads_per_fit or 'none'}",
              file=sys.stderr)
        results: dict = {}
        if args.part in ("all", "training"):
            runs: dict[str, list[dict]] = {"bare": [], "plain": [], "flow": []}
            # plain and flow alternate, so a burst of load elsewhere on the machine hits both alike
            order = ["bare"] + ["plain", "flow"] * args.repeat
            for i, side in enumerate(order):
                print(f"running {side} ({i + 1}/{len(order)}) ...", file=sys.stderr)
                runs[side].append(run_side(side, work / "template", work / f"run{i}", args))
            results = {side: min(rs, key=lambda r: r["seconds"]) | {"runs": rs} for side, rs in runs.items()}
        if args.part in ("all", "search"):
            print("running search ...", file=sys.stderr)
            results["search"] = run_side("search", work / "template", work / "search", args)
    results["config"] = {"rows": args.rows, "days": args.days, "n_iter": args.n_iter, "family": args.family,
                         "threads_per_fit": args.threads_per_fit, "cpus": os.cpu_count(),
                         "load_average": os.getloadavg()}
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _pct(a: dict, b: dict, key: str) -> str:
    return f"{a[key] / b[key] - 1:+.1%}"


def render(r: dict) -> str:
    lines = render_training(r) if "flow" in r else []
    if "search" in r:
        lines += render_search(r)
    c = r["config"]
    lines.append(f"\nload average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in c['load_average'])}; "
                 f"{c['cpus']} CPUs; threads_per_fit {c['threads_per_fit'] or 'none'}")
    return "\n".join(lines)


def render_training(r: dict) -> list[str]:
    flow, plain, bare, c = r["flow"], r["plain"], r["bare"], r["config"]
    return [
        f"| training run ({c['rows']:,} rows, {c['family']}, n_iter {c['n_iter']}, n_jobs 2) | wall s (best) "
        "| CPU s | test ROC AUC |",
        "|---|---|---|---|",
        f"| bare scikit-learn script (read, split, search, score, dump) | {bare['seconds']:.1f} "
        f"| {bare['cpu_seconds']:.1f} | {bare['roc_auc']:.4f} |",
        f"| plain mlcycle functions, no Prefect | {plain['seconds']:.1f} | {plain['cpu_seconds']:.1f} "
        f"| {plain['roc_auc']:.4f} |",
        f"| `train_flow` under Prefect | {flow['seconds']:.1f} | {flow['cpu_seconds']:.1f} | {flow['roc_auc']:.4f} |",
        "",
        f"Orchestration overhead, flow vs plain mlcycle: wall {_pct(flow, plain, 'seconds')}, "
        f"CPU {_pct(flow, plain, 'cpu_seconds')}. What mlcycle adds over the bare script: "
        f"wall {_pct(plain, bare, 'seconds')}, CPU {_pct(plain, bare, 'cpu_seconds')}. "
        f"Prefect server start (before the flow, not timed): {flow['server_start_seconds']:.1f}s. Identical ROC AUC "
        f"on every side: {len({round(x['roc_auc'], 12) for x in (bare, plain, flow)}) == 1}. All runs (wall s): "
        + "; ".join(f"{k} " + ", ".join(f"{x['seconds']:.1f}" for x in r[k]["runs"])
                    for k in ("bare", "plain", "flow")),
        "",
    ]


def render_search(r: dict) -> list[str]:
    search, c = r["search"], r["config"]
    lines = [f"| search only ({c['rows']:,} rows, same split, same {c['n_iter']} candidates) | wall s | CPU s "
             "| speed-up vs 1 worker, 1 thread |",
             "|---|---|---|---|"]
    base = search["1 worker, 1 thread"]["seconds"]
    for label, row in search.items():
        lines.append(f"| {label} | {row['seconds']:.1f} | {row['cpu_seconds']:.1f} | {base / row['seconds']:.2f}x |")
    return lines


if __name__ == "__main__":
    main()
