"""Benchmark: drift of a 1,000,000-row window (20 features) against a 1,000,000-row reference, mlcycle vs Evidently.

The script generates both data sets itself (seeded numpy, written once as Parquet to a temporary
directory shared by both sides): 14 numeric features (normal, lognormal, uniform, integer-valued) and
6 categorical ones (3-8 categories). In the current window 4 numeric features are clearly drifted
(a shift of 0.5 sd, a 1.5x rescale, an 8-year shift of an integer age, a 1.5x wider spread) and 2
categorical ones (a 20-point and a 15-point share move); the other 14 are drawn from the same
distributions as the reference, so a sound method and Evidently should agree on the drifted set.

* **mlcycle**, two fresh processes. First the reference profile is built from the reference Parquet
  (``build_profile``, as the training flow does once per model version; timed and reported apart) and
  written as JSON. Then, in a new process: load that profile and ``assess_drift`` the current window,
  reading the current Parquet one column at a time (the read is inside the timed part), with a
  ``DatasetSpec`` of these 20 features (categories declared), ``DriftSettings()`` defaults and no
  prediction column. ``scipy.stats`` is imported before the clock starts (a monitor process has it).
* **Evidently 0.7.23** ``Report([DataDriftPreset()], include_tests=True)`` in its own virtualenv
  (``benchmarks/.envs/evidently``, created by this script when missing: Evidently 0.7.23 does not
  import with pandas 3), in a fresh process: read both Parquet files with pandas, ``Dataset.from_pandas``
  with a ``DataDefinition`` declaring the same numeric and categorical columns, ``report.run``, and the
  per-column verdicts from the snapshot (the "Value Drift for column X" tests: FAIL = drift detected).

Each side runs once; peak memory is the process RSS sampled every 5 ms by a thread (``/proc``) during
the timed part, reported as the process peak and as the increase over the RSS when the clock started.

    .venv/bin/python benchmarks/drift.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV_DIR = ROOT / "benchmarks" / ".envs" / "evidently"
EVIDENTLY_REQUIREMENTS = ["evidently==0.7.23", "pandas<3", "pyarrow"]
SEED = 20261001

# name -> (kind, how the reference is drawn, how the current window is drawn); stdlib only, so the
# Evidently worker (another virtualenv) reads the same declaration.
NUMERIC = {
    "n00_normal": ("normal", (50.0, 10.0), None),
    "n01_normal": ("normal", (0.0, 1.0), (0.5, 1.0)),  # drift: +0.5 sd
    "n02_lognormal": ("lognormal", (3.0, 0.5), "x1.5"),  # drift: every value x1.5
    "n03_lognormal": ("lognormal", (0.0, 1.0), None),
    "n04_uniform": ("uniform", (0.0, 100.0), None),
    "n05_uniform": ("uniform", (-1.0, 1.0), None),
    "n06_age_int": ("integers", (18, 81), (26, 89)),  # drift: +8 years (~0.45 sd)
    "n07_poisson_int": ("poisson", (3.0,), None),
    "n08_int": ("integers", (0, 1001), None),
    "n09_normal": ("normal", (1000.0, 250.0), (1000.0, 375.0)),  # drift: sd x1.5, same mean
    "n10_lognormal": ("lognormal", (8.0, 0.8), None),
    "n11_uniform": ("uniform", (0.0, 1.0), None),
    "n12_binomial_int": ("binomial", (20, 0.3), None),
    "n13_normal": ("normal", (-5.0, 2.0), None),
}
CATEGORICAL = {
    "c0_3cat": ([0.5, 0.3, 0.2], None),
    "c1_4cat": ([0.4, 0.3, 0.2, 0.1], [0.2, 0.5, 0.2, 0.1]),  # drift: 20 points from a to b
    "c2_5cat": ([0.3, 0.25, 0.2, 0.15, 0.1], None),
    "c3_6cat": ([0.25, 0.2, 0.2, 0.15, 0.1, 0.1], None),
    "c4_8cat": ([0.25, 0.2, 0.15, 0.12, 0.1, 0.08, 0.06, 0.04],
                [0.10, 0.2, 0.15, 0.12, 0.1, 0.08, 0.21, 0.04]),  # drift: 15 points from a to g
    "c5_7cat": ([0.2, 0.2, 0.15, 0.15, 0.1, 0.1, 0.1], None),
}
FEATURES = [*NUMERIC, *CATEGORICAL]
DRIFTED = sorted([n for n, (_, _, cur) in NUMERIC.items() if cur is not None]
                 + [n for n, (_, cur) in CATEGORICAL.items() if cur is not None])


def categories(name: str) -> list[str]:
    return [chr(ord("a") + i) for i in range(len(CATEGORICAL[name][0]))]


class PeakRSS:
    """Samples this process's RSS (``/proc/self/statm``) in a thread; ``peak`` is the maximum seen."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.start_rss = self._rss()
        self.peak = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


# --------------------------------------------------------------------------------------------------
# The data
# --------------------------------------------------------------------------------------------------


def generate(rows: int, seed: int, current: bool):
    """One data set as a pyarrow Table: the reference (``current=False``) or the drifted window."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    columns = {}
    for name, (dist, ref_params, cur) in NUMERIC.items():
        params = cur if (current and isinstance(cur, tuple)) else ref_params
        values = getattr(rng, dist)(*params, size=rows)
        if current and cur == "x1.5":
            values = values * 1.5
        columns[name] = pa.array(values)
    for name, (ref_shares, cur_shares) in CATEGORICAL.items():
        shares = cur_shares if (current and cur_shares) else ref_shares
        idx = rng.choice(len(shares), size=rows, p=shares).astype(np.int32)
        columns[name] = pa.DictionaryArray.from_arrays(pa.array(idx), pa.array(categories(name))).dictionary_decode()
    return pa.table(columns)


def dataset_spec():
    from mlcycle.tasks.settings import DatasetSpec, FeatureSpec

    features = []
    for name, (dist, _, _) in NUMERIC.items():
        features.append(FeatureSpec(name=name, kind="numeric",
                                    dtype="int" if dist in ("integers", "poisson", "binomial") else "float"))
    for name in CATEGORICAL:
        features.append(FeatureSpec(name=name, kind="categorical", categories=categories(name)))
    return DatasetSpec(name="drift_benchmark", id_column="row_id", timestamp_column="ts", target="label",
                       features=features)


# --------------------------------------------------------------------------------------------------
# mlcycle: the profile (once per model version), then the assessment of the window
# --------------------------------------------------------------------------------------------------


def measure_profile(data: Path) -> dict:
    import datetime as dt

    import numpy as np
    import pyarrow.parquet as pq
    import scipy.stats  # noqa: F401

    from mlcycle.tasks.profile import build_profile
    from mlcycle.tasks.settings import DriftSettings, TrainingSettings

    spec, drift = dataset_spec(), DriftSettings()
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        frame = pq.read_table(data / "reference.parquet").to_pandas()
        # no model in this benchmark: a placeholder label/score vector for the profile's prediction part
        profile = build_profile(frame, spec.features, np.zeros(1), np.full(1, 0.5), dataset=spec.name,
                                dataset_schema_hash=spec.schema_hash(), n_bins=TrainingSettings().profile_bins,
                                created_at=dt.datetime(2026, 10, 1, tzinfo=dt.UTC),
                                sample_size=drift.reference_sample_size, seed=0)
        del frame
        (data / "reference_profile.json").write_bytes(profile.to_json_bytes())
        seconds = time.perf_counter() - t0
    return {"side": "mlcycle profile", "seconds": seconds, "peak_rss_mb": rss.peak / 1e6,
            "peak_extra_mb": (rss.peak - rss.start_rss) / 1e6,
            "profile_kb": (data / "reference_profile.json").stat().st_size / 1e3}


class ParquetColumns:
    """A lazy mapping over one Parquet file: ``[name]`` reads that one column (numpy, or pandas for strings)."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self._file = pq.ParquetFile(path)
        self.rows = self._file.metadata.num_rows

    def __getitem__(self, name: str):
        import pyarrow as pa

        column = self._file.read(columns=[name]).column(0)
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            return column.to_numpy()
        return column.to_pandas()


def measure_mlcycle(data: Path) -> dict:
    import scipy.stats  # noqa: F401  (tasks.drift imports it lazily; a running monitor has it loaded)

    from mlcycle.tasks.drift import assess_drift
    from mlcycle.tasks.profile import ReferenceProfile
    from mlcycle.tasks.settings import DriftSettings

    spec, config = dataset_spec(), DriftSettings()
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        profile = ReferenceProfile.model_validate_json((data / "reference_profile.json").read_bytes())
        current = ParquetColumns(data / "current.parquet")
        decision = assess_drift(profile, current, spec, config, prediction_column=None, rows=current.rows)
        seconds = time.perf_counter() - t0
    details = {}
    for r in decision.features:
        effect = (f"PSI {r.psi:.3f}, W/sd {r.wasserstein_norm:.3f}" if r.kind == "numeric"
                  else f"JS {r.js_distance:.3f}")
        details[r.feature] = {"drifted": r.drifted, "effect": effect, "p_adjusted": r.p_adjusted}
    return {"side": "mlcycle", "seconds": seconds, "peak_rss_mb": rss.peak / 1e6,
            "peak_extra_mb": (rss.peak - rss.start_rss) / 1e6, "drifted": sorted(decision.drifted_features),
            "dataset_drift": decision.dataset_drift, "features": details}


# --------------------------------------------------------------------------------------------------
# Evidently, in its own virtualenv
# --------------------------------------------------------------------------------------------------


def evidently_python() -> Path:
    """The Evidently virtualenv's interpreter, created (venv + pip) when it is missing or broken."""
    python = ENV_DIR / "bin" / "python"
    check = [str(python), "-c", "import evidently, pandas, pyarrow; assert evidently.__version__ == '0.7.23'; "
             "assert int(pandas.__version__.split('.')[0]) < 3"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating {ENV_DIR.relative_to(ROOT)} ({' '.join(EVIDENTLY_REQUIREMENTS)}) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(ENV_DIR)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *EVIDENTLY_REQUIREMENTS], check=True)
    subprocess.run(check, check=True)
    return python


def measure_evidently(data: Path) -> dict:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(NUMERIC), categorical_columns=list(CATEGORICAL))
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        reference = pd.read_parquet(data / "reference.parquet")
        current = pd.read_parquet(data / "current.parquet")
        t_load = time.perf_counter()
        report = Report([DataDriftPreset()], include_tests=True)
        snapshot = report.run(current_data=Dataset.from_pandas(current, data_definition=definition),
                              reference_data=Dataset.from_pandas(reference, data_definition=definition))
        t_run = time.perf_counter()
        result = snapshot.dict()
        seconds = time.perf_counter() - t0
    scores = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith(":ValueDrift"):
            scores[config["column"]] = {"method": config.get("method"), "threshold": config.get("threshold"),
                                        "score": metric["value"]}
    details = {}
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if params.get("type", "").endswith(":ValueDrift"):
            column = params["column"]
            score = scores[column]
            details[column] = {"drifted": test["status"] == "FAIL",
                               "effect": f"{score['method']} {score['score']:.3f} (threshold {score['threshold']})"}
    assert set(details) == set(FEATURES), sorted(set(FEATURES) ^ set(details))
    return {"side": "evidently", "seconds": seconds, "load_s": t_load - t0, "run_s": t_run - t_load,
            "peak_rss_mb": rss.peak / 1e6, "peak_extra_mb": (rss.peak - rss.start_rss) / 1e6,
            "drifted": sorted(c for c, d in details.items() if d["drifted"]), "features": details}


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def run_side(python: Path, side: str, data: Path) -> dict:
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    out = subprocess.run([str(python), __file__, "--measure", side, "--data", str(data)], capture_output=True,
                         text=True, env=env, timeout=3600)
    if out.returncode != 0:
        sys.exit(f"{side} measurement failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the reference and in the window")
    parser.add_argument("--measure", choices=["profile", "mlcycle", "evidently"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        if args.measure != "evidently":
            sys.path.insert(0, str(ROOT))
        fn = {"profile": measure_profile, "mlcycle": measure_mlcycle, "evidently": measure_evidently}[args.measure]
        print(json.dumps(fn(Path(args.data))))
        return

    import pyarrow.parquet as pq

    evidently = evidently_python()
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        data = Path(tmp)
        for name, seed, current in (("reference", SEED, False), ("current", SEED + 1, True)):
            pq.write_table(generate(args.rows, seed, current), data / f"{name}.parquet")
        profile = run_side(Path(sys.executable), "profile", data)
        ours = run_side(Path(sys.executable), "mlcycle", data)
        theirs = run_side(evidently, "evidently", data)

    print(f"\n{args.rows:,} current rows x {len(FEATURES)} features ({len(NUMERIC)} numeric, {len(CATEGORICAL)} "
          f"categorical) against a {args.rows:,}-row reference; drifted by construction: {', '.join(DRIFTED)}\n")
    print("| side | wall s | peak RSS MB | peak over start MB | drifted features |")
    print("|---|---|---|---|---|")
    print(f"| Evidently 0.7.23 `DataDriftPreset` (read both files + run + snapshot) | {theirs['seconds']:.1f} | "
          f"{theirs['peak_rss_mb']:.0f} | {theirs['peak_extra_mb']:.0f} | {', '.join(theirs['drifted']) or '-'} |")
    print(f"| mlcycle `assess_drift` (profile JSON + current file, column by column) | {ours['seconds']:.2f} | "
          f"{ours['peak_rss_mb']:.0f} | {ours['peak_extra_mb']:.0f} | {', '.join(ours['drifted']) or '-'} |")
    print(f"| (mlcycle reference profile, built once per model version) | {profile['seconds']:.2f} | "
          f"{profile['peak_rss_mb']:.0f} | {profile['peak_extra_mb']:.0f} | ({profile['profile_kb']:.0f} KB JSON) |")
    print(f"\nEvidently: reading the two files {theirs['load_s']:.1f} s, report.run {theirs['run_s']:.1f} s, "
          f"snapshot {theirs['seconds'] - theirs['load_s'] - theirs['run_s']:.1f} s")

    speedup = theirs["seconds"] / ours["seconds"]
    memory = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
    same = set(ours["drifted"]) == set(theirs["drifted"])
    print(f"speed-up vs Evidently: {speedup:.1f}x (target >= 30x: {'met' if speedup >= 30 else 'NOT met'})")
    print(f"peak RSS vs Evidently: {memory:.2f}x (target <= 0.5x: {'met' if memory <= 0.5 else 'NOT met'})")
    if same:
        print(f"agreement: same drifted features ({len(ours['drifted'])}): met")
    else:
        print(f"agreement: NOT met; only mlcycle: {sorted(set(ours['drifted']) - set(theirs['drifted']))}, "
              f"only Evidently: {sorted(set(theirs['drifted']) - set(ours['drifted']))}")
    for side, result in (("mlcycle", ours), ("Evidently", theirs)):
        verdict = "matches" if result["drifted"] == DRIFTED else "does NOT match"
        print(f"{side} {verdict} the drift built into the data")

    print("\n| feature | drifted by construction | mlcycle | Evidently |")
    print("|---|---|---|---|")
    for name in FEATURES:
        mark = {True: "**drift**", False: "no"}
        o, t = ours["features"][name], theirs["features"][name]
        print(f"| {name} | {mark[name in DRIFTED]} | {mark[o['drifted']]}: {o['effect']} | "
              f"{mark[t['drifted']]}: {t['effect']} |")


if __name__ == "__main__":
    main()
