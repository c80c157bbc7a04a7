"""Benchmark: one in-process model call, before and after the serving fast path, against the model's floor.

Per family (default: both the config offers, ``hist_gradient_boosting`` with 200 iterations and
``logistic_regression``), a champion is trained on 10 simulated validated days through the training stage,
registered, and loaded back from the registry (sha256-verified ``model.joblib``). Its test window's first
1,000 rows are turned into what the service holds after validation (``tasks.schema``: records validated by
the generated pydantic model, then one numpy array per feature). Then, in the same run, interleaved call by
call so that a busy machine slows every side alike, with one OpenMP/BLAS thread (threadpoolctl):

* **before**: the registry pipeline on a DataFrame of the columns (``FramePipeline``: what the scorer did
  before, the DataFrame built per call included);
* **transform**: the compiled transform, the estimator called as it is (``CompiledPipeline`` with its
  trees left out: the fast path before the trees were compiled);
* **after**: the compiled pipeline (``bentos/fastpath.py: CompiledPipeline``) on the columns, a gradient
  boosting estimator's trees compiled too (``CompiledTrees``; above its row budget the estimator scores);
* **floor**: the bare estimator's ``predict_proba`` on the ready float64 matrix (no transform at all; a
  calibrated version's map left out);
* **trees**: the compiled trees' ``predict_proba`` on the same ready matrix (gradient boosting only).

Each side scores 1 row and 1,000 rows per call, ``tasks.predictions.model_scores`` for the first three (the
service's call). Every side's scores are checked equal first (bit for bit). Prints median and p99 per call,
and for gradient boosting the crossover: the compiled trees' walk forced on 1 to 200 ready rows against the
estimator's own ``predict_proba`` (where ``ROW_DEPTH_BUDGET`` comes from); ``--profile`` adds cProfile
summaries of the "before" calls (where the time goes); ``--json`` writes results.

    .venv/bin/python benchmarks/pipeline_call.py [--calls 3000] [--families hist_gradient_boosting ...]
                                                 [--profile] [--json results.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import offline_environment, simulated_champion  # noqa: E402 - after the path insert

offline_environment()

SIZES = (1, 1000)


def registry_model(home: Path, family: str):
    """(settings, loaded registry model, test-window frame of 1,000 rows) for a champion of ``family``."""
    from mlcycle.tasks.registry.versions import load_model
    from mlcycle.tasks.serving.client import canary_rows
    from mlcycle.tasks.settings import load_settings

    settings = load_settings(home=home, training={"family": family, "n_iter": 2, "n_jobs": 1})
    store, version = simulated_champion(settings)
    loaded = load_model(store, version.name, version.version)
    frame, _ = canary_rows(store, settings, version.name, version.version, max(SIZES))
    return settings, loaded, frame


def request_columns(settings, features: list[str], frame, rows: int) -> dict[str, np.ndarray]:
    """The first ``rows`` rows as the service holds them: validated records -> one array per feature."""
    from mlcycle.tasks.schema import build_schema
    from mlcycle.tasks.serving.client import records_payload

    schema = build_schema(settings.dataset, features, max_batch_rows=max(SIZES))
    records = [schema.record.model_validate(r) for r in records_payload(frame.head(rows), settings.dataset, features)]
    return schema.records_to_columns(records)


def timed(calls: dict[str, callable], repeat: int) -> dict[str, list[float]]:
    """Seconds per call of each side, the sides interleaved call by call (after a warm-up of each)."""
    for call in calls.values():
        for _ in range(20):
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    clock = time.perf_counter
    for _ in range(repeat):
        for name, call in calls.items():
            start = clock()
            call()
            seconds[name].append(clock() - start)
    return seconds


def profile_summary(call, repeat: int, top: int = 12) -> str:
    """Where a call's time goes: cProfile's cumulative top functions over ``repeat`` calls, per call."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        call()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def side_calls(before, after, columns: dict[str, np.ndarray], task: str, classes) -> dict[str, callable]:
    """The sides' calls on the same rows: before, transform (trees left out), after, the floor and the
    compiled trees on the ready matrix (the last and the transform side only when there are compiled trees)."""
    from mlcycle.tasks.predictions import model_scores

    matrix = after.transform(columns)
    calls = {"before": lambda: model_scores(before, columns, task, classes)}
    if after.trees is not None:
        transform_only = dataclasses.replace(after, trees=None)
        calls["transform"] = lambda: model_scores(transform_only, columns, task, classes)
    calls["after"] = lambda: model_scores(after, columns, task, classes)
    calls["floor"] = lambda: after.estimator.predict_proba(matrix)
    if after.trees is not None:
        calls["trees"] = lambda: after.trees.predict_proba(matrix)
    return calls


def crossover(after, columns: dict[str, np.ndarray], calls: int) -> list[dict]:
    """Median ms of the compiled trees' walk (forced, whatever the row budget) against the estimator's own
    ``predict_proba`` on 1 to 200 ready rows: where the walk stops paying (``ROW_DEPTH_BUDGET``)."""
    from sklearn import config_context

    from mlcycle.bentos.fastpath import compile_trees

    matrix = after.transform(columns)
    walked = compile_trees(after.estimator, budget=200 * after.trees.depth)
    out = []
    for rows in (1, 10, 25, 50, 100, 200):
        part = matrix[:rows]
        assert np.array_equal(walked.predict_proba(part), after.estimator.predict_proba(part))
        with config_context(assume_finite=True, skip_parameter_validation=True):  # as the service calls them
            seconds = timed({"walk": lambda part=part: walked.predict_proba(part),
                             "estimator": lambda part=part: after.estimator.predict_proba(part)}, calls)
        out.append({"rows": rows, "depth": after.trees.depth, "trees": len(after.trees.roots),
                    **{f"{side}_ms": float(np.median(v) * 1e3) for side, v in seconds.items()}})
    return out


def measure(family: str, calls: int, profile: bool) -> list[dict]:
    from threadpoolctl import threadpool_limits

    from mlcycle.bentos.fastpath import FramePipeline, compile_pipeline

    home = Path(tempfile.mkdtemp(prefix="pipeline-call-"))
    settings, loaded, frame = registry_model(home, family)
    features = [c.name for c in loaded.metadata.features]
    task, classes = settings.dataset.task, settings.dataset.class_labels
    before = FramePipeline(loaded.pipeline, features)
    after = compile_pipeline(loaded.pipeline)
    results = []
    with threadpool_limits(1):
        for rows in SIZES:
            sides_columns = request_columns(settings, features, frame, rows)
            sides = side_calls(before, after, sides_columns, task, classes)
            assert np.array_equal(sides["before"](), sides["after"]()), "the fast path must equal the pipeline"
            assert all(np.array_equal(sides["floor"](), sides[s]()) for s in ("trees",) if s in sides)
            repeat = calls if rows == 1 else max(calls // 10, 50)
            seconds = timed(sides, repeat)
            for side, values in seconds.items():
                ms = np.asarray(values) * 1e3
                results.append({"family": family, "model": type(loaded.pipeline).__name__,
                                "estimator": type(after.estimator).__name__, "rows": rows, "side": side,
                                "trees": after.trees is not None,
                                "calls": len(ms), "median_ms": float(np.median(ms)),
                                "p99_ms": float(np.percentile(ms, 99))})
            if rows == max(SIZES) and after.trees is not None:
                for r in crossover(after, sides_columns, max(calls // 10, 50)):
                    results.append({"family": family, "side": "crossover", **r})
            if profile:
                print(f"\n--- profile: {family}, before, {rows} row(s) per call, cumulative s over 200 calls ---")
                print(profile_summary(sides["before"], 200))
    return results


def print_table(results: list[dict]) -> None:
    print("\n| family | rows per call | side | median ms | p99 ms | x floor (median) |")
    print("|---|---|---|---|---|---|")
    floors = {(r["family"], r["rows"]): r["median_ms"] for r in results if r["side"] == "floor"}
    for r in results:
        if r["side"] == "crossover":
            continue
        label = {"before": "registry pipeline on a DataFrame (before)",
                 "transform": "compiled transform, estimator called as it is",
                 "after": "compiled fast path (after)" + (", trees compiled" if r["trees"] else ""),
                 "floor": f"bare {r['estimator']} on a ready matrix (floor)",
                 "trees": "compiled trees on the ready matrix"}[r["side"]]
        print(f"| {r['family']} | {r['rows']:,} | {label} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | "
              f"{r['median_ms'] / floors[(r['family'], r['rows'])]:.2f} |")
    crossing = [r for r in results if r["side"] == "crossover"]
    if crossing:
        print("\n| family | ready rows | trees x depth | compiled trees' walk, median ms | "
              "estimator's own, median ms |")
        print("|---|---|---|---|---|")
        for r in crossing:
            print(f"| {r['family']} | {r['rows']:,} | {r['trees']} x {r['depth']} | {r['walk_ms']:.3f} | "
                  f"{r['estimator_ms']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="one-row calls per side (1,000-row: a tenth)")
    parser.add_argument("--families", nargs="+", default=["hist_gradient_boosting", "logistic_regression"])
    parser.add_argument("--profile", action="store_true", help="print cProfile summaries of the 'before' calls")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    results = [r for family in args.families for r in measure(family, args.calls, args.profile)]
    print_table(results)
    import os

    print(f"\nload average during the run: {os.getloadavg()[0]:.2f} (1 min), on {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
