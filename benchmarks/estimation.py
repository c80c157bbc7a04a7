"""Benchmark: label-free performance estimation (CBPE) and multivariate drift, mlcycle vs NannyML, 1 M rows x 20.

The script generates the data itself (seeded numpy): a reference set and an analysis set of ``--rows`` rows
each, 20 numeric features from a 4-factor model (so the features are correlated, as real ones are), and a
binary target drawn from a logistic model of them (``y ~ Bernoulli(sigmoid(b0 + x . beta))``). The analysis
set is in time order and its covariates shift gradually: the first 30 % of the rows are drawn as the
reference, then a ramp ``f`` from 0 to 1 over the rest moves the first latent factor's mean by ``+f``
(seven features move together), rescales ``x05`` (the largest coefficient) by ``1 + f`` and shifts ``x12``
by ``+0.75 f``. ``P(y | x)`` never changes (pure covariate shift, the case CBPE is built for), yet the
realized metrics move with the inputs. A ``LogisticRegression`` is fitted on a seeded 100,000-row sample of
the reference; its probabilities of both sets, and ``y_pred = probability >= 0.5``, are what the monitors see.
Everything goes to Parquet files in a temporary directory, read by each measuring process:

* **mlcycle CBPE** (a fresh process, this interpreter): ``cbpe_binary`` (roc_auc, accuracy, f1; 200 label
  draws for the std) on the whole analysis set as one window, then on its 20 chunks (``rows / 20`` each:
  50,000 at full size, NannyML's chunked usage); the realized values from the labels (``realized_binary``)
  per chunk and for the window, timed apart. No fit: ``cbpe_binary`` reads the window's probabilities only.
* **NannyML CBPE** (a fresh process in NannyML's own virtualenv): ``nannyml.CBPE(..., chunk_size=rows/20)``
  fitted on the reference (probabilities, predictions and labels; the fit also decides whether to calibrate
  and estimates the reference chunks), then ``estimate`` on the analysis set without its labels; then the same
  fitted estimator with its chunker set to one chunk of the whole window.
* **mlcycle multivariate drift** (a fresh process): ``multivariate_drift`` of the whole analysis set against
  a seeded 5,000-row sample of the reference (what the training flow stores; ``max_rows=5000`` samples the
  window), then of each chunk against the same sample.
* **NannyML** ``DataReconstructionDriftCalculator`` (the 20 features, ``chunk_size=rows/20``; fitted on the
  whole reference, whose chunks set its alert thresholds), ``calculate`` on the analysis set; then one chunk.

Loading the Parquet files is outside the timed parts. Peak memory is the process RSS sampled every 5 ms
during each timed part (``benchmarks.drift.PeakRSS``), with the process's ``getrusage`` peak. NannyML's
usage telemetry is switched off (``NML_DISABLE_USAGE_LOGGING=1``).

NannyML's interpreter: ``$NANNYML_PYTHON`` if set, else ``/opt/nannyml-env/bin/python`` (outside the
repository), created there (venv + pip, the pins below) when it is missing or broken. If it cannot be created
the NannyML columns read "n/a" and the script says why.

    .venv/bin/python benchmarks/estimation.py              # 1,000,000 rows, 20 chunks of 50,000
    .venv/bin/python benchmarks/estimation.py --rows 100000   # quick run, 20 chunks of 5,000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import offline_environment  # noqa: E402 - after the path insert
from benchmarks.drift import PeakRSS  # noqa: E402 - stdlib only, so NannyML's interpreter imports it too

NANNYML_DEFAULT_ENV = Path("/opt/nannyml-env")
# nannyml 0.13.1 imports statsmodels (nannyml/plots/components/joy_plot.py) without declaring it
NANNYML_REQUIREMENTS = ["nannyml==0.13.1", "statsmodels==0.15.0", "pandas==3.1.1", "pyarrow==26.0.1"]
NANNYML_VERSION = "0.13.1"
SEED = 20261016
FEATURES = [f"x{i:02d}" for i in range(20)]
METRICS = ("roc_auc", "accuracy", "f1")
THRESHOLD = 0.5
CHUNKS = 20
REFERENCE_SAMPLE = 5_000  # the joint reference sample multivariate_drift compares against
MODEL_SAMPLE = 100_000  # reference rows the monitored model is fitted on
UNSHIFTED = 0.3  # the first 30 % of the analysis rows are drawn like the reference


# --------------------------------------------------------------------------------------------------
# The data (main process only)
# --------------------------------------------------------------------------------------------------


def parameters():
    """The fixed truth: factor loadings (20 x 4), the logistic coefficients and intercept."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    loadings = rng.normal(0.0, 0.6, size=(len(FEATURES), 4))
    loadings[:7, 0] = np.abs(loadings[:7, 0]) + 0.4  # x00..x06 load on factor 0, which shifts
    loadings[7:, 0] = 0.0
    beta = rng.normal(0.0, 0.35, size=len(FEATURES))
    beta[5], beta[12], beta[0] = 0.9, -0.5, 0.4
    return loadings, beta, -0.8


def shift_ramp(rows: int):
    """The analysis rows' shift fraction: 0 for the first UNSHIFTED share, then a linear ramp to 1."""
    import numpy as np

    position = (np.arange(rows) + 0.5) / rows
    return np.clip((position - UNSHIFTED) / (1 - UNSHIFTED), 0.0, 1.0)


def generate(rows: int, seed: int, shifted: bool):
    """(features (rows x 20), labels) of the reference (``shifted=False``) or of the analysis set."""
    import numpy as np

    loadings, beta, intercept = parameters()
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(rows, loadings.shape[1]))
    f = shift_ramp(rows) if shifted else np.zeros(rows)
    factors[:, 0] += f
    x = factors @ loadings.T + 0.7 * rng.normal(size=(rows, len(FEATURES)))
    x[:, 5] *= 1.0 + f
    x[:, 12] += 0.75 * f
    p = 1.0 / (1.0 + np.exp(-(intercept + x @ beta)))
    y = (rng.random(rows) < p).astype(np.int64)
    return x, y


def write_data(rows: int, data: Path) -> dict:
    """The four Parquet files; returns what the report needs to know about the data."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    x_ref, y_ref = generate(rows, SEED + 1, shifted=False)
    x_ana, y_ana = generate(rows, SEED + 2, shifted=True)
    rng = np.random.default_rng(SEED + 3)
    fit_rows = rng.choice(rows, min(MODEL_SAMPLE, rows), replace=False)
    model = LogisticRegression(max_iter=1000).fit(x_ref[fit_rows], y_ref[fit_rows])
    p_ref, p_ana = model.predict_proba(x_ref)[:, 1], model.predict_proba(x_ana)[:, 1]

    def table(x, **extra):
        return pa.table({**{name: x[:, i] for i, name in enumerate(FEATURES)}, **extra})

    pq.write_table(table(x_ref, y_true=y_ref, y_pred_proba=p_ref, y_pred=(p_ref >= THRESHOLD).astype(np.int64)),
                   data / "reference.parquet")
    sample = np.sort(rng.choice(rows, min(REFERENCE_SAMPLE, rows), replace=False))
    pq.write_table(table(x_ref[sample]), data / "reference_sample.parquet")
    pq.write_table(table(x_ana, y_pred_proba=p_ana, y_pred=(p_ana >= THRESHOLD).astype(np.int64)),
                   data / "analysis.parquet")  # no labels: the monitors estimate without them
    pq.write_table(pa.table({"y_true": y_ana}), data / "analysis_labels.parquet")
    ramp = shift_ramp(rows).reshape(CHUNKS, -1).mean(axis=1)
    return {"seconds": time.perf_counter() - t0, "positive_rate_reference": float(y_ref.mean()),
            "positive_rate_analysis": float(y_ana.mean()), "chunk_shift": ramp.tolist()}


# --------------------------------------------------------------------------------------------------
# The measuring processes
# --------------------------------------------------------------------------------------------------


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(fn):
    """(result, seconds, peak RSS MB during the call, RSS MB when it started)."""
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
    return result, seconds, rss.peak / 1e6, rss.start_rss / 1e6


def _step(name: str, rows: int, timed) -> dict:
    _, seconds, peak, start = timed
    return {"step": name, "rows": rows, "seconds": seconds, "peak_rss_mb": peak, "start_rss_mb": start}


def measure_ours_cbpe(data: Path, chunk_size: int) -> dict:
    import pyarrow.parquet as pq
    import scipy.stats  # noqa: F401  (a running monitor has it loaded)
    import sklearn.metrics  # noqa: F401

    from mlcycle.tasks.monitor.estimation import cbpe_binary, realized_binary

    p = pq.read_table(data / "analysis.parquet", columns=["y_pred_proba"]).column(0).to_numpy()
    y = pq.read_table(data / "analysis_labels.parquet").column(0).to_numpy()
    n = len(p)
    spans = [(start, start + chunk_size) for start in range(0, n, chunk_size)]

    def estimate(values):
        return {m: {"value": e.value, "std": e.std, "lower": e.lower, "upper": e.upper} for m, e in
                cbpe_binary(values, THRESHOLD, metrics=METRICS, draws=200, seed=0).items()}

    window = _timed(lambda: estimate(p))
    chunks = _timed(lambda: [estimate(p[a:b]) for a, b in spans])
    realized = _timed(lambda: {"window": realized_binary(y, p, THRESHOLD, METRICS),
                               "chunks": [realized_binary(y[a:b], p[a:b], THRESHOLD, METRICS) for a, b in spans]})
    return {"side": "ours_cbpe", "max_rss_mb": _max_rss_mb(), "window": window[0], "chunks": chunks[0],
            "realized": realized[0],
            "steps": [_step("window", n, window), _step("chunks", n, chunks), _step("realized", n, realized)]}


def measure_ours_drift(data: Path, chunk_size: int) -> dict:
    import pandas as pd
    import sklearn.ensemble  # noqa: F401
    import sklearn.inspection  # noqa: F401

    from mlcycle.tasks.drift_multivariate import multivariate_drift

    reference = pd.read_parquet(data / "reference_sample.parquet", columns=FEATURES)
    current = pd.read_parquet(data / "analysis.parquet", columns=FEATURES)
    n = len(current)

    def verdict(frame):
        d = multivariate_drift(reference, frame, FEATURES, seed=0)
        return {"auc": d.auc, "p_value": d.p_value, "drifted": d.drifted, "n": d.n_current,
                "top_features": [[f, round(v, 4)] for f, v in d.top_features]}

    window = _timed(lambda: verdict(current))
    chunks = _timed(lambda: [verdict(current.iloc[a:a + chunk_size]) for a in range(0, n, chunk_size)])
    return {"side": "ours_drift", "max_rss_mb": _max_rss_mb(), "window": window[0], "chunks": chunks[0],
            "steps": [_step("window", n, window), _step("chunks", n, chunks)]}


def _nannyml_quiet() -> None:
    import logging
    import warnings

    os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"
    warnings.filterwarnings("ignore")
    logging.getLogger("nannyml").setLevel(logging.ERROR)


def measure_nannyml_cbpe(data: Path, chunk_size: int) -> dict:
    _nannyml_quiet()
    import nannyml
    import pandas as pd
    from nannyml.chunk import SizeBasedChunker

    reference = pd.read_parquet(data / "reference.parquet", columns=["y_true", "y_pred_proba", "y_pred"])
    analysis = pd.read_parquet(data / "analysis.parquet", columns=["y_pred_proba", "y_pred"])
    n = len(analysis)
    estimator = nannyml.CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y_true",
                             problem_type="classification_binary", metrics=list(METRICS), chunk_size=chunk_size)

    def rows(result):
        frame = result.filter(period="analysis").to_df()
        return [{m: {"value": float(r[(m, "value")]), "std": float(r[(m, "sampling_error")]),
                     "lower": float(r[(m, "lower_confidence_boundary")]),
                     "upper": float(r[(m, "upper_confidence_boundary")]), "alert": bool(r[(m, "alert")])}
                 for m in METRICS} for _, r in frame.iterrows()]

    fit = _timed(lambda: estimator.fit(reference))
    chunks = _timed(lambda: rows(estimator.estimate(analysis)))
    estimator.chunker = SizeBasedChunker(chunk_size=n)  # the same fitted estimator, one chunk: the whole window
    window = _timed(lambda: rows(estimator.estimate(analysis))[0])
    return {"side": "nannyml_cbpe", "version": nannyml.__version__, "pandas": pd.__version__,
            "max_rss_mb": _max_rss_mb(), "needs_calibration": bool(estimator.needs_calibration),
            "window": window[0], "chunks": chunks[0],
            "steps": [_step("fit", len(reference), fit), _step("chunks", n, chunks), _step("window", n, window)]}


def measure_nannyml_drift(data: Path, chunk_size: int) -> dict:
    _nannyml_quiet()
    import nannyml
    import pandas as pd
    from nannyml.chunk import SizeBasedChunker

    reference = pd.read_parquet(data / "reference.parquet", columns=FEATURES)
    analysis = pd.read_parquet(data / "analysis.parquet", columns=FEATURES)
    n = len(analysis)
    calculator = nannyml.DataReconstructionDriftCalculator(column_names=FEATURES, chunk_size=chunk_size)

    def rows(result):
        frame = result.filter(period="analysis").to_df()
        c = "reconstruction_error"
        return [{"value": float(r[(c, "value")]), "upper_threshold": _number(r[(c, "upper_threshold")]),
                 "lower_threshold": _number(r[(c, "lower_threshold")]), "alert": bool(r[(c, "alert")])}
                for _, r in frame.iterrows()]

    fit = _timed(lambda: calculator.fit(reference))
    chunks = _timed(lambda: rows(calculator.calculate(analysis)))
    calculator.chunker = SizeBasedChunker(chunk_size=n)
    window = _timed(lambda: rows(calculator.calculate(analysis))[0])
    return {"side": "nannyml_drift", "version": nannyml.__version__, "max_rss_mb": _max_rss_mb(),
            "components": int(calculator._pca.n_components_), "window": window[0], "chunks": chunks[0],
            "steps": [_step("fit", len(reference), fit), _step("chunks", n, chunks), _step("window", n, window)]}


def _number(value):
    return None if value is None or value != value else float(value)


MEASURES = {"ours_cbpe": measure_ours_cbpe, "ours_drift": measure_ours_drift,
            "nannyml_cbpe": measure_nannyml_cbpe, "nannyml_drift": measure_nannyml_drift}


# --------------------------------------------------------------------------------------------------
# NannyML's interpreter, the subprocesses
# --------------------------------------------------------------------------------------------------


def nannyml_python() -> tuple[Path | None, str]:
    """(NannyML's interpreter, "") or (None, why there is none): ``$NANNYML_PYTHON``, else the default venv,
    created with the pinned requirements when it is missing or broken."""
    named = os.environ.get("NANNYML_PYTHON")
    python = Path(named) if named else NANNYML_DEFAULT_ENV / "bin" / "python"
    check = [str(python), "-c", f"import nannyml, pyarrow; assert nannyml.__version__ == '{NANNYML_VERSION}', "
             "nannyml.__version__"]
    env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}
    if python.exists():
        out = subprocess.run(check, capture_output=True, text=True, env=env)
        if out.returncode == 0:
            return python, ""
        if named:
            error = out.stderr.strip()[-500:]
            return None, f"$NANNYML_PYTHON={named} does not import nannyml {NANNYML_VERSION}: {error}"
    elif named:
        return None, f"$NANNYML_PYTHON={named} does not exist"
    print(f"creating {NANNYML_DEFAULT_ENV} ({' '.join(NANNYML_REQUIREMENTS)}) ...", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(NANNYML_DEFAULT_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *NANNYML_REQUIREMENTS], check=True)
        subprocess.run(check, check=True, env=env)
    except (subprocess.CalledProcessError, OSError) as exc:
        return None, f"could not create {NANNYML_DEFAULT_ENV}: {exc}"
    return python, ""


def run_side(python: Path, side: str, data: Path, chunk_size: int) -> dict:
    env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1", "DO_NOT_TRACK": "1"}
    out = subprocess.run([str(python), __file__, "--measure", side, "--data", str(data), "--chunk-size",
                          str(chunk_size)], capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        sys.exit(f"{side} measurement failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------


def fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def print_report(rows: int, chunk_size: int, meta: dict, ours: dict, drift: dict, nml: dict | None,
                 nml_drift: dict | None, why_not: str, load: tuple) -> None:
    print(f"\n{rows:,} reference + {rows:,} analysis rows x {len(FEATURES)} numeric features; "
          f"{CHUNKS} chunks of {chunk_size:,}; positive rate {meta['positive_rate_reference']:.3f} (reference), "
          f"{meta['positive_rate_analysis']:.3f} (analysis); covariate shift ramps from chunk "
          f"{int(UNSHIFTED * CHUNKS) + 1}; threshold {THRESHOLD}; data generated + model fitted in "
          f"{meta['seconds']:.1f} s; load average {load[0]:.1f} at the start")
    if nml is None:
        print(f"NannyML side skipped: {why_not}")
    else:
        print(f"NannyML {nml['version']} (pandas {nml['pandas']}); CBPE calibrates the probabilities: "
              f"{nml['needs_calibration']}; reconstruction PCA keeps {nml_drift['components']} of "
              f"{len(FEATURES)} components")

    def row(method, step, side_result):
        if side_result is None:
            return f"| {method} | n/a | n/a | n/a | n/a |"
        s = next(x for x in side_result["steps"] if x["step"] == step)
        return (f"| {method} | {s['rows']:,} | {s['seconds']:.2f} | {s['peak_rss_mb']:.0f} "
                f"(+{s['peak_rss_mb'] - s['start_rss_mb']:.0f}) | {side_result['max_rss_mb']:.0f} |")

    print("\n| method | rows | seconds | peak RSS MB during it (+ over its start) | process peak RSS MB |")
    print("|---|---|---|---|---|")
    print(row("mlcycle `cbpe_binary`, one window", "window", ours))
    print(row(f"mlcycle `cbpe_binary`, {CHUNKS} chunks of {chunk_size:,}", "chunks", ours))
    print(row("NannyML `CBPE.fit` (reference: calibration check, reference chunks)", "fit", nml))
    print(row(f"NannyML `CBPE.estimate`, {CHUNKS} chunks of {chunk_size:,}", "chunks", nml))
    print(row("NannyML `CBPE.estimate`, one window (same fitted estimator)", "window", nml))
    print(row(f"realized (labels): `realized_binary`, window + {CHUNKS} chunks", "realized", ours))
    print(row(f"mlcycle `multivariate_drift`, window vs {REFERENCE_SAMPLE:,}-row reference sample", "window", drift))
    print(row(f"mlcycle `multivariate_drift`, {CHUNKS} chunks vs the same sample", "chunks", drift))
    print(row("NannyML `DataReconstructionDriftCalculator.fit` (reference)", "fit", nml_drift))
    print(row(f"NannyML `DataReconstructionDriftCalculator.calculate`, {CHUNKS} chunks", "chunks", nml_drift))
    print(row("NannyML `DataReconstructionDriftCalculator.calculate`, one window", "window", nml_drift))

    names = {"roc_auc": "ROC AUC", "accuracy": "accuracy", "f1": "F1"}
    header = " | ".join(f"{names[m]} realized | ours | NannyML" for m in METRICS)
    print(f"\n| chunk | shift | {header} |")
    print("|---|---|" + "---|" * (3 * len(METRICS)))
    entries = [(str(i + 1), meta["chunk_shift"][i], ours["realized"]["chunks"][i], ours["chunks"][i],
                nml["chunks"][i] if nml else None) for i in range(CHUNKS)]
    entries.append(("window", sum(meta["chunk_shift"]) / CHUNKS, ours["realized"]["window"], ours["window"],
                    nml["window"] if nml else None))
    for label, shift, realized, o, t in entries:
        cells = " | ".join(f"{realized[m]:.4f} | {o[m]['value']:.4f} | {fmt(t[m]['value'] if t else None)}"
                           for m in METRICS)
        print(f"| {label} | {shift:.2f} | {cells} |")

    print(f"\n| metric (over the {CHUNKS} chunks) | max abs(ours - NannyML) | max abs(ours - realized) | "
          "max abs(NannyML - realized) | realized inside ours' band / NannyML's | mean std ours / NannyML |")
    print("|---|---|---|---|---|---|")
    for m in METRICS:
        real = [r[m] for r in ours["realized"]["chunks"]]
        o = [c[m] for c in ours["chunks"]]
        t = [c[m] for c in nml["chunks"]] if nml else None
        err_o = max(abs(a["value"] - r) for a, r in zip(o, real, strict=True))
        inside_o = sum(a["lower"] <= r <= a["upper"] for a, r in zip(o, real, strict=True))
        std_o = sum(a["std"] for a in o) / len(o)
        if t:
            diff = max(abs(a["value"] - b["value"]) for a, b in zip(o, t, strict=True))
            err_t = max(abs(b["value"] - r) for b, r in zip(t, real, strict=True))
            inside_t = sum(b["lower"] <= r <= b["upper"] for b, r in zip(t, real, strict=True))
            std_t = sum(b["std"] for b in t) / len(t)
            print(f"| {names[m]} | {diff:.2e} | {err_o:.4f} | {err_t:.4f} | {inside_o}/{CHUNKS} / "
                  f"{inside_t}/{CHUNKS} | {std_o:.4f} / {std_t:.4f} |")
        else:
            print(f"| {names[m]} | n/a | {err_o:.4f} | n/a | {inside_o}/{CHUNKS} / n/a | {std_o:.4f} / n/a |")
    w = ours["window"]
    print("one window: " + "; ".join(
        f"{names[m]} ours {w[m]['value']:.4f} +- {w[m]['std']:.4f}"
        + (f", NannyML {nml['window'][m]['value']:.4f} +- {nml['window'][m]['std']:.4f}" if nml else "")
        + f", realized {ours['realized']['window'][m]:.4f}" for m in METRICS))

    print("\n| chunk | shift | ours: classifier AUC | p-value | drifted | NannyML: reconstruction error | "
          "NannyML thresholds | NannyML alert |")
    print("|---|---|---|---|---|---|---|---|")
    for i in range(CHUNKS + 1):
        label = str(i + 1) if i < CHUNKS else "window"
        shift = meta["chunk_shift"][i] if i < CHUNKS else sum(meta["chunk_shift"]) / CHUNKS
        d = drift["chunks"][i] if i < CHUNKS else drift["window"]
        t = (nml_drift["chunks"][i] if i < CHUNKS else nml_drift["window"]) if nml_drift else None
        nml_cells = (f"{t['value']:.4f} | [{fmt(t['lower_threshold'])}, {fmt(t['upper_threshold'])}] | "
                     f"{'**alert**' if t['alert'] else 'no'}") if t else "n/a | n/a | n/a"
        print(f"| {label} | {shift:.2f} | {fmt(d['auc'])} | {d['p_value']:.1e} | "
              f"{'**drift**' if d['drifted'] else 'no'} | {nml_cells} |")
    top = ", ".join(f"{f} {v:.3f}" for f, v in drift["window"]["top_features"]) or "-"
    print(f"ours, whole window ({drift['window']['n']:,} rows a side compared): top features {top}")
    unshifted = int(UNSHIFTED * CHUNKS)
    ours_flags = sum(c["drifted"] for c in drift["chunks"][unshifted:])
    ours_false = sum(c["drifted"] for c in drift["chunks"][:unshifted])
    line = (f"drift flagged in shifted chunks: ours {ours_flags}/{CHUNKS - unshifted}; in unshifted chunks "
            f"(false alarms): ours {ours_false}/{unshifted}")
    if nml_drift:
        nml_flags = sum(c["alert"] for c in nml_drift["chunks"][unshifted:])
        nml_false = sum(c["alert"] for c in nml_drift["chunks"][:unshifted])
        line = line.replace("; in unshifted", f", NannyML {nml_flags}/{CHUNKS - unshifted}; in unshifted")
        line += f", NannyML {nml_false}/{unshifted}"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help=f"rows in the reference and in the analysis "
                        f"set (a multiple of {CHUNKS}; e.g. 100000 for a quick run)")
    parser.add_argument("--measure", choices=sorted(MEASURES), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--chunk-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        if args.measure.startswith("ours"):
            offline_environment()
        print(json.dumps(MEASURES[args.measure](Path(args.data), args.chunk_size)))
        return
    if args.rows % CHUNKS or args.rows < CHUNKS * 100:
        parser.error(f"--rows must be a multiple of {CHUNKS}, at least {CHUNKS * 100}")
    chunk_size = args.rows // CHUNKS

    load = os.getloadavg()
    nml_python, why_not = nannyml_python()
    with tempfile.TemporaryDirectory(prefix="estimation-bench-") as tmp:
        data = Path(tmp)
        meta = write_data(args.rows, data)
        ours = run_side(Path(sys.executable), "ours_cbpe", data, chunk_size)
        nml = run_side(nml_python, "nannyml_cbpe", data, chunk_size) if nml_python else None
        drift = run_side(Path(sys.executable), "ours_drift", data, chunk_size)
        nml_drift = run_side(nml_python, "nannyml_drift", data, chunk_size) if nml_python else None
    print_report(args.rows, chunk_size, meta, ours, drift, nml, nml_drift, why_not, load)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (2 cores; other runs share the machine)")


if __name__ == "__main__":
    main()
