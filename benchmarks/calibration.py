"""Benchmark: calibration on the validation days, uncalibrated vs as registered, on real tables.

For each real table shipped offline by statsmodels (``fair``, binary; ``anes96``, multiclass with 7 classes)
and each family (hist_gradient_boosting, logistic_regression), ``--seeds`` seeded orderings of the table's
rows over 8 validated days (tests/support/real_training.py, the same set-up as the tests) are trained twice
through the real ``train_challenger``: once with ``training.calibration.enabled: false`` (the baseline:
the pipeline as fitted) and once as configured (calibrated when the decision says so). Same seed, same
rows: the two base pipelines are the same fit, so the comparison is paired. Measured on the test days,
which neither the model nor its calibration map has seen:

* the ECE (10 equal-width bins; binary on the positive class, multiclass top-label);
* how far CBPE's label-free ROC AUC estimate of the test days (``cbpe_binary`` / ``cbpe_multiclass``) is from
  the realized one: calibration exists for this;
* the time the calibration step took.

    .venv/bin/python benchmarks/calibration.py --seeds 5
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def test_days(store, candidate):
    """(y, probabilities (n, k)) of the candidate's staged test predictions."""
    from mlcycle.tasks.training.challenger import staged_predictions

    staged = pd.read_parquet(io.BytesIO(store.get_bytes(candidate.artifacts["test_predictions.parquet"].key)))
    y, scores = staged_predictions(staged, candidate.task, candidate.classes)
    return y, scores


def measure(table, family: str, seed: int, calibrate: bool) -> dict:
    from mlcycle.tasks.evaluation.calibration import as_proba, expected_calibration_error, positions
    from mlcycle.tasks.monitor.estimation import cbpe_binary, cbpe_multiclass, realized_binary, realized_multiclass
    from mlcycle.tasks.training.challenger import train_challenger
    from mlcycle.tasks.training.window import select_window
    from tests.support.real_training import DAYS, seed_table, write_config

    root = Path(tempfile.mkdtemp(prefix="mlcycle-calibration-"))
    os.environ["MLCYCLE_CONFIG"] = str(write_config(root / "mlcycle.yaml", table, family=family,
                                                    training={"calibration": {"enabled": calibrate}, "seed": seed}))
    settings, store = seed_table(root / "home", table, seed=seed)
    candidate = train_challenger(store, settings, select_window(store, days=DAYS))
    y, scores = test_days(store, candidate)
    proba = as_proba(scores)
    if candidate.task == "binary":
        y_index = positions(y, [0, 1])
        estimated = cbpe_binary(proba[:, 1], candidate.threshold, metrics=["roc_auc"])["roc_auc"].value
        realized = realized_binary(y_index, proba[:, 1], candidate.threshold, ["roc_auc"])["roc_auc"]
    else:
        y_index = positions(y, candidate.classes)
        estimated = cbpe_multiclass(proba, metrics=["roc_auc"])["roc_auc"].value
        realized = realized_multiclass(y_index, proba, ["roc_auc"])["roc_auc"]
    report = candidate.calibration
    return {"ece": expected_calibration_error(y_index, proba, 10), "auc_error": abs(estimated - realized),
            "test_auc": realized,
            "estimated": estimated, "realized": realized, "applied": bool(report and report.applied),
            "validation_ece": report.ece_before if report else float("nan"),
            "seconds": candidate.seconds.get("calibration", 0.0), "rows": len(y_index)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    from tests.support.datasets import anes96, fair
    from tests.support.training import one_thread_per_fit

    rows = []
    with one_thread_per_fit():
        for make in (fair, anes96):
            table = make()
            for family in ("hist_gradient_boosting", "logistic_regression"):
                for seed in range(args.seeds):
                    plain = measure(table, family, seed, calibrate=False)
                    served = measure(table, family, seed, calibrate=True)
                    rows.append({"table": table.name, "family": family, "seed": seed, "test_rows": plain["rows"],
                                 "validation_ece": served["validation_ece"], "applied": served["applied"],
                                 "ece_plain": plain["ece"], "ece_registered": served["ece"],
                                 "cbpe_error_plain": plain["auc_error"], "cbpe_error_registered": served["auc_error"],
                                 "seconds": served["seconds"], "auc_plain": plain["test_auc"],
                                 "auc_registered": served["test_auc"]})
    frame = pd.DataFrame(rows)
    print("| table | family | runs | calibrated | test ECE as fitted | test ECE as registered | "
          "CBPE ROC AUC error as fitted | as registered | calibration s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, family), g in frame.groupby(["table", "family"], sort=False):
        print(f"| {name} | {family} | {len(g)} | {int(g.applied.sum())} | {g.ece_plain.mean():.4f} | "
              f"{g.ece_registered.mean():.4f} | {g.cbpe_error_plain.mean():.4f} | {g.cbpe_error_registered.mean():.4f} "
              f"| {g.seconds.mean():.2f} |")
    applied = frame[frame.applied]
    if len(applied):
        better = int((applied.ece_registered < applied.ece_plain).sum())
        closer = int((applied.cbpe_error_registered < applied.cbpe_error_plain).sum())
        print(f"\ncalibrated runs: {len(applied)}; test ECE lower in {better}, CBPE closer to realized in {closer}; "
              f"mean test rows {frame.test_rows.mean():.0f}")
    print("\nper run:\n" + frame.round(4).to_string(index=False))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
