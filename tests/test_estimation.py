"""Label-free performance estimation (tasks/monitor/estimation.py: CBPE; tasks/monitor/loss_estimation.py: DLE).

Seeded simulations where the truth is known: the labels of every window are drawn, withheld from the
estimator, and used only to compute the realized metric the estimate is compared with.

* covariate shift (P(x) moves, P(y|x) does not): the estimate follows the realized metric;
* pure concept drift (P(y|x) changes, P(x) does not): the estimate cannot move, the realized metric does
  (the documented blind spot);
* no drift: the monitor's "estimated drop beyond tolerance" fires in at most 5% of windows;
* bad inputs get a ValueError naming the problem.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlcycle.tasks.monitor.assessment import Estimator, estimate_window
from mlcycle.tasks.monitor.estimation import cbpe_binary, cbpe_multiclass, realized_binary, realized_multiclass
from mlcycle.tasks.monitor.loss_estimation import LossEstimator, realized_regression
from mlcycle.tasks.settings import DatasetSpec, FeatureSpec

WINDOWS = 40
WINDOW_ROWS = 2000
BETA = np.array([1.2, -0.8, 0.6, 0.0, 0.4])
SHIFTS = np.linspace(0.0, 1.5, WINDOWS)  # the covariate shift of window i: x0's mean moves by SHIFTS[i]


def features(n: int, shift: float, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, len(BETA)))
    x[:, 0] += shift
    x[:, 2] *= 1 + shift / 2  # a spread change too, not only a location change
    return x


def binary_labels(x: np.ndarray, rng: np.random.Generator, beta: np.ndarray = BETA) -> np.ndarray:
    return (rng.random(len(x)) < 1 / (1 + np.exp(-(x @ beta - 0.3)))).astype(int)


@pytest.fixture(scope="module")
def binary_world():
    """A logistic model fitted on 20,000 reference rows, and 40 windows under a growing covariate shift."""
    rng = np.random.default_rng(20261205)
    x = features(20_000, 0.0, rng)
    model = LogisticRegression().fit(x, binary_labels(x, rng))
    windows = []
    for shift in SHIFTS:
        xw = features(WINDOW_ROWS, shift, rng)
        windows.append((model.predict_proba(xw)[:, 1], binary_labels(xw, rng)))
    return model, windows


def test_cbpe_roc_auc_and_accuracy_are_within_0_02_of_realized_in_90_percent_of_windows(binary_world):
    _, windows = binary_world
    close = {"roc_auc": 0, "accuracy": 0}
    realized_auc = []
    for i, (p, y) in enumerate(windows):
        estimate = cbpe_binary(p, 0.5, metrics=["roc_auc", "accuracy"], draws=50, seed=i)
        realized = realized_binary(y, p, 0.5, ["roc_auc", "accuracy"])
        realized_auc.append(realized["roc_auc"])
        for metric in close:
            close[metric] += abs(estimate[metric].value - realized[metric]) <= 0.02
    assert close["roc_auc"] >= 0.9 * WINDOWS, close
    assert close["accuracy"] >= 0.9 * WINDOWS, close
    # the shift really moved performance: the estimate had something to follow
    assert max(realized_auc) - min(realized_auc) > 0.03


def test_cbpe_uncertainty_matches_the_realized_spread_and_the_band_covers_it(binary_world):
    _, windows = binary_world
    inside, ratios = 0, []
    for i, (p, y) in enumerate(windows):
        estimate = cbpe_binary(p, 0.5, metrics=["accuracy"], draws=200, seed=i)["accuracy"]
        realized = realized_binary(y, p, 0.5, ["accuracy"])["accuracy"]
        inside += estimate.lower <= realized <= estimate.upper
        ratios.append(abs(realized - estimate.value) / estimate.std)
    assert inside >= 0.95 * WINDOWS  # a 3-sigma band
    assert 0.5 < float(np.sqrt(np.mean(np.square(ratios)))) < 1.5  # errors are about one std, not ten


def test_cbpe_multiclass_accuracy_and_macro_auc_follow_realized_under_covariate_shift():
    rng = np.random.default_rng(7)
    weights = np.array([[1.0, -0.5, 0.0], [-0.7, 1.0, 0.3], [0.2, 0.4, -1.0]])

    def draw(n, shift):
        x = rng.standard_normal((n, 3))
        x[:, 0] += shift
        logits = x @ weights
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return x, (rng.random((n, 1)) > np.cumsum(p, axis=1)[:, :-1]).sum(axis=1)

    x, y = draw(20_000, 0.0)
    model = LogisticRegression().fit(x, y)
    close, errors = {"accuracy": 0, "roc_auc_ovr": 0}, []
    for i, shift in enumerate(SHIFTS):
        xw, yw = draw(WINDOW_ROWS, shift)
        p = model.predict_proba(xw)
        estimate = cbpe_multiclass(p, metrics=["accuracy", "roc_auc_ovr"], draws=20, seed=i)
        realized = realized_multiclass(yw, p, ["accuracy", "roc_auc_ovr"])
        errors.append(estimate["accuracy"].value - realized["accuracy"])
        for metric in close:
            close[metric] += abs(estimate[metric].value - realized[metric]) <= 0.02
    # the realized accuracy of 2,000 rows at ~0.55 has a sampling std of ~0.011, so 0.02 is ~1.8 std: about 93%
    # of windows are expected inside it; the estimate must be unbiased and inside in at least 85% of them
    assert abs(float(np.mean(errors))) < 0.005
    assert min(close.values()) >= 0.85 * WINDOWS, close


def test_under_pure_concept_drift_the_estimate_does_not_move_and_realized_performance_drops(binary_world):
    """The documented blind spot: the inputs and so the probabilities are unchanged, the outcome is not."""
    model, _ = binary_world
    rng = np.random.default_rng(11)
    drifted_beta = BETA * np.array([-1.0, 1.0, 1.0, 1.0, 1.0])  # x0's effect reverses
    before, after = [], []
    for i in range(10):
        x = features(WINDOW_ROWS, 0.0, rng)
        p = model.predict_proba(x)[:, 1]
        estimate = cbpe_binary(p, 0.5, metrics=["roc_auc"], draws=20, seed=i)["roc_auc"].value
        before.append((estimate, realized_binary(binary_labels(x, rng), p, 0.5, ["roc_auc"])["roc_auc"]))
        after.append((estimate, realized_binary(binary_labels(x, rng, drifted_beta), p, 0.5, ["roc_auc"])["roc_auc"]))
    estimated_before, realized_before = np.mean(before, axis=0)
    estimated_after, realized_after = np.mean(after, axis=0)
    assert abs(estimated_after - estimated_before) < 0.005
    assert realized_before - realized_after > 0.15
    assert abs(estimated_before - realized_before) < 0.02  # before the drift the estimate was right


# --------------------------------------------------------------------------------------------------
# regression: direct loss estimation
# --------------------------------------------------------------------------------------------------


def regression_rows(n: int, shift: float, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """y = 2 x0 - x1 + a region flag effect + noise whose scale grows with |x0| (heteroscedastic)."""
    frame = pd.DataFrame({"x0": rng.standard_normal(n) + shift, "x1": rng.standard_normal(n),
                          "region": rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2])})
    noise = rng.standard_normal(n) * (0.3 + np.abs(frame["x0"].to_numpy()))
    y = 2 * frame["x0"] - frame["x1"] + (frame["region"] == "south") * 1.5 + noise
    return frame, y.to_numpy()


def design(frame: pd.DataFrame) -> np.ndarray:
    return np.column_stack([frame["x0"], frame["x1"], frame["region"] == "south"])


@pytest.fixture(scope="module")
def regression_world():
    rng = np.random.default_rng(2026)
    train, y_train = regression_rows(10_000, 0.0, rng)
    model = LinearRegression().fit(design(train), y_train)
    held_out, y_held = regression_rows(5_000, 0.0, rng)
    estimator = LossEstimator.fit(held_out, model.predict(design(held_out)), y_held, seed=0)
    return model, estimator


def test_dle_mae_is_within_10_percent_of_realized_in_90_percent_of_windows(regression_world):
    model, estimator = regression_world
    rng = np.random.default_rng(99)
    close, realized_mae = 0, []
    for i, shift in enumerate(SHIFTS):
        frame, y = regression_rows(WINDOW_ROWS, shift, rng)
        predictions = model.predict(design(frame))
        estimate = estimator.estimate(frame, predictions, metrics=["mae"], draws=20, seed=i)["mae"].value
        realized = realized_regression(y, predictions, ["mae"])["mae"]
        realized_mae.append(realized)
        close += abs(estimate - realized) <= 0.10 * realized
    assert close >= 0.9 * WINDOWS, close
    assert max(realized_mae) > 1.5 * min(realized_mae)  # the shift made the model clearly worse


def test_a_loss_estimator_survives_joblib_and_gives_the_same_estimate(regression_world, tmp_path):
    import joblib

    model, estimator = regression_world
    frame, _ = regression_rows(500, 0.5, np.random.default_rng(3))
    predictions = model.predict(design(frame))
    joblib.dump(estimator, tmp_path / "loss.joblib")
    again = joblib.load(tmp_path / "loss.joblib")
    assert again.estimate(frame, predictions, draws=5)["mae"].value == estimator.estimate(frame, predictions, draws=5)[
        "mae"].value


def test_an_unseen_category_in_the_window_is_read_as_missing_not_an_error(regression_world):
    model, estimator = regression_world
    frame, _ = regression_rows(300, 0.0, np.random.default_rng(4))
    predictions = model.predict(design(frame))
    frame.loc[:10, "region"] = "atlantis"
    assert np.isfinite(estimator.estimate(frame, predictions, draws=5)["mae"].value)


# --------------------------------------------------------------------------------------------------
# the monitor's judgement: an estimated drop beyond tolerance, and how often it fires without drift
# --------------------------------------------------------------------------------------------------

SPEC = DatasetSpec(name="simulated", target="y", features=[FeatureSpec(name=f"x{i}", kind="numeric") for i in range(5)])


def window_rows(p: np.ndarray, y: np.ndarray | None = None) -> pd.DataFrame:
    rows = pd.DataFrame({"probability": p, "ts": pd.date_range("2026-12-01", periods=len(p), freq="1s", tz="UTC")})
    rows["y"] = y if y is not None else np.nan
    return rows


def test_an_estimated_drop_beyond_tolerance_fires_in_at_most_5_percent_of_windows_without_drift(binary_world):
    model, _ = binary_world
    rng = np.random.default_rng(5)
    estimator = Estimator("binary", threshold=0.5, draws=20)
    reference_x = features(10_000, 0.0, rng)
    reference = estimator.on_probabilities(model.predict_proba(reference_x)[:, 1])["roc_auc"].value
    fired = 0
    for _ in range(WINDOWS):
        p = model.predict_proba(features(WINDOW_ROWS, 0.0, rng))[:, 1]
        result = estimate_window(window_rows(p), SPEC, estimator, "roc_auc", reference, 0.02, min_rows=500)
        fired += result.degraded
    assert fired <= 0.05 * WINDOWS


def test_a_window_whose_estimated_auc_drops_says_so_in_words_with_the_realized_value_beside_it(binary_world):
    model, _ = binary_world
    rng = np.random.default_rng(6)
    estimator = Estimator("binary", threshold=0.5, draws=20)
    x = features(WINDOW_ROWS, 0.0, rng)
    x[:, 0] = rng.standard_normal(WINDOW_ROWS) * 0.1  # the most informative feature barely varies any more
    p = model.predict_proba(x)[:, 1]
    result = estimate_window(window_rows(p, binary_labels(x, rng)), SPEC, estimator, "roc_auc", 0.85, 0.05,
                             min_rows=500)
    assert result.degraded
    assert "estimated roc_auc" in result.detail and "beyond the tolerance 0.05" in result.detail
    judged = result.estimates["roc_auc"]
    assert judged.realized is not None and abs(judged.realized - judged.value) < 0.03
    assert result.chunks and sum(chunk.rows for chunk in result.chunks) == WINDOW_ROWS


def test_a_window_below_min_rows_gets_no_estimate_and_says_why():
    estimator = Estimator("binary", threshold=0.5, draws=5)
    result = estimate_window(window_rows(np.full(40, 0.3)), SPEC, estimator, "roc_auc", 0.8, 0.05, min_rows=500)
    assert not result.estimates and not result.degraded
    assert "40 rows in the window, fewer than the 500 needed" in result.detail


# --------------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("probabilities", "message"), [
    (np.array([]), "empty window"),
    (np.array([0.2, np.nan, 0.4]), "NaN or infinite"),
    (np.array([0.2, 1.4]), "outside [0, 1]"),
    (np.array([[0.2, 0.8], [0.5, 0.5]]), "shape (n,)"),
])
def test_bad_binary_probabilities_are_named(probabilities, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        cbpe_binary(probabilities, 0.5)


def test_bad_multiclass_probabilities_and_metrics_are_named():
    with pytest.raises(ValueError, match="do not sum to 1"):
        cbpe_multiclass(np.array([[0.2, 0.2, 0.2], [0.3, 0.3, 0.4]]))
    with pytest.raises(ValueError, match="k >= 2"):
        cbpe_multiclass(np.array([[1.0], [1.0]]))
    with pytest.raises(ValueError, match=r"cannot estimate binary metric\(s\) \['log_loss'\]"):
        cbpe_binary(np.array([0.2, 0.7]), 0.5, metrics=["log_loss"])
    with pytest.raises(ValueError, match="threshold must be a probability"):
        cbpe_binary(np.array([0.2, 0.7]), 1.5)
    with pytest.raises(ValueError, match="labels must be integer class codes"):
        realized_binary(np.array([0, 2]), np.array([0.2, 0.7]), 0.5, ["accuracy"])


def test_a_loss_estimator_names_missing_columns_short_references_and_mismatched_rows(regression_world):
    model, estimator = regression_world
    frame, y = regression_rows(300, 0.0, np.random.default_rng(8))
    predictions = model.predict(design(frame))
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['region'\]"):
        estimator.estimate(frame.drop(columns="region"), predictions)
    with pytest.raises(ValueError, match="inconsistent numbers of rows"):
        estimator.estimate(frame, predictions[:-1])
    with pytest.raises(ValueError, match="at least 100 reference rows"):
        LossEstimator.fit(frame.head(50), predictions[:50], y[:50])
    with pytest.raises(ValueError, match="NaN or infinite"):
        LossEstimator.fit(frame, predictions, np.where(np.arange(len(y)) == 3, np.nan, y))
