"""What a version stores for its monitor beyond the reference profile (tasks/profile.py).

* ``reference_sample.parquet``: a seeded sample of ``drift.multivariate.reference_rows`` rows of the fitted
  data (train + validation), every feature column jointly, as the model reads them: the reference side of
  the multivariate drift test (tasks/drift_multivariate.py). The profile's per-feature samples are sorted
  one column at a time, so they hold the marginals only; a change of correlation needs the rows.
* ``loss_estimator.joblib`` (regression): the direct-loss-estimation model (tasks/monitor/estimation.py:
  ``LossEstimator``) of the served model's absolute and squared errors, fitted on the **test** days, the
  only rows the served model (refitted on train + validation) never saw: errors on fitted rows are
  optimistic and would teach the loss model that the model is better than it is. It is sha256-recorded
  with the version like ``model.joblib`` and verified before it is unpickled.

Classification needs nothing more: CBPE reads the served probabilities, and its test-day reference comes
from ``test_predictions.parquet``, stored with every version.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from mlcycle.tasks.features import model_input

REFERENCE_SAMPLE_FILE = "reference_sample.parquet"
LOSS_ESTIMATOR_FILE = "loss_estimator.joblib"


def reference_sample(frame: pd.DataFrame, features, rows: int, seed: int) -> bytes:
    """The joint reference rows: a seeded sample of ``frame``'s feature columns, as parquet bytes."""
    data = model_input(frame, features)
    if len(data) > rows:
        data = data.sample(n=rows, random_state=seed)
    buf = io.BytesIO()
    data.reset_index(drop=True).to_parquet(buf, index=False)
    return buf.getvalue()


def loss_estimator(test: pd.DataFrame, features, predictions: np.ndarray, y: np.ndarray, seed: int) -> bytes:
    """The regression model's loss estimator fitted on its test days, as joblib bytes."""
    import joblib

    from mlcycle.tasks.monitor.loss_estimation import LossEstimator

    fitted = LossEstimator.fit(model_input(test, features), np.asarray(predictions, dtype=float),
                               np.asarray(y, dtype=float), seed=seed)
    buf = io.BytesIO()
    joblib.dump(fitted, buf, compress=3)
    return buf.getvalue()


def monitoring_artifacts(frames: dict[str, pd.DataFrame], y_test: np.ndarray, test_scores: np.ndarray, features,
                         task: str, reference_rows: int, seed: int) -> dict[str, bytes]:
    """The files above for one candidate: ``frames`` are its train/validation/test splits."""
    fitted = pd.concat([frames["train"], frames["validation"]], ignore_index=True)
    artifacts = {REFERENCE_SAMPLE_FILE: reference_sample(fitted, features, reference_rows, seed)}
    if task == "regression":
        artifacts[LOSS_ESTIMATOR_FILE] = loss_estimator(frames["test"], features, test_scores, y_test, seed)
    return artifacts
