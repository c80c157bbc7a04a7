"""Calibration on the validation days (tasks/evaluation/calibration.py, tasks/calibrated.py).

Simulated probabilities whose miscalibration is known (overconfident, underconfident, multiclass with a known
temperature) show the maps undo it out of sample and leave calibrated probabilities alone; real tables (fair,
anes96) show the decision end to end: the version carries the report, the registered model is calibrated
exactly when the report says so, and the test days confirm it.
"""

from __future__ import annotations

import io

import joblib
import numpy as np
import pytest
from sklearn.base import is_classifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression

from mlcycle.tasks.calibrated import CalibratedModel, ProbabilityMap
from mlcycle.tasks.evaluation.calibration import (
    calibration_decision,
    consistency_p_value,
    expected_calibration_error,
    fit_map,
    reliability,
)
from mlcycle.tasks.features import model_input
from mlcycle.tasks.registry.versions import load_metadata, load_model
from mlcycle.tasks.settings import ConfigError, load_settings
from mlcycle.tasks.training.challenger import train_challenger
from mlcycle.tasks.training.window import load_test_window, select_window
from tests.support.datasets import anes96, fair, randhie
from tests.support.real_training import DAYS, seed_table, train_and_gate, write_config
from tests.support.training import one_thread_per_fit


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def binary_rows(n: int, seed: int, sharpen: float = 1.0):
    """Outcomes drawn from true probabilities, and the model's probabilities: the truth's log-odds times
    ``sharpen`` (1: calibrated; above 1: overconfident; below 1: underconfident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.2, n)
    y = (rng.random(n) < sigmoid(z)).astype(int)
    p = sigmoid(sharpen * z)
    return y, np.column_stack([1 - p, p])


def multiclass_rows(n: int, seed: int, temperature: float, k: int = 4):
    """Outcomes from softmax(z); the model says softmax(z / temperature) (below 1: overconfident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.0, (n, k))
    truth = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = (rng.random((n, 1)) > np.cumsum(truth, axis=1)).sum(axis=1).clip(0, k - 1)
    model = np.exp(z / temperature) / np.exp(z / temperature).sum(axis=1, keepdims=True)
    return y, model


def decide(y, proba, classes=(0, 1), **kw):
    options = dict(method="auto", bins=10, max_ece=0.05, seed=7) | kw
    return calibration_decision(y, proba, list(classes), **options)


@pytest.mark.parametrize("sharpen", [2.5, 0.4], ids=["overconfident", "underconfident"])
def test_a_miscalibrated_binary_model_is_calibrated_and_stays_so_on_new_rows(sharpen):
    y, proba = binary_rows(3000, seed=1, sharpen=sharpen)
    mapping, report = decide(y, proba)
    assert report.method == "sigmoid" and report.applied, report.reason
    assert report.ece_before > 0.05 and report.ece_after < report.ece_before / 2
    assert report.log_loss_after < report.log_loss_before and report.p_value < 0.01
    assert "registered calibrated" in report.reason
    # rows neither the model nor the map has seen: the map learned the miscalibration, not the noise
    y_new, proba_new = binary_rows(20_000, seed=2, sharpen=sharpen)
    before = expected_calibration_error(y_new, proba_new, 10)
    after = expected_calibration_error(y_new, mapping.apply(proba_new), 10)
    assert after < 0.02 < before
    assert mapping.slopes[0] == pytest.approx(1 / sharpen, rel=0.15)  # Platt undoes the sharpening


def test_calibrated_probabilities_are_registered_as_fitted_and_noise_is_not_mistaken_for_miscalibration():
    y, proba = binary_rows(20_000, seed=3)
    mapping, report = decide(y, proba)
    assert mapping is None and not report.applied and report.ece_before < 0.02
    assert "within training.calibration.max_ece 0.05" in report.reason
    # a small calibrated sample shows an ECE that looks large; the test against chance says it is noise
    y_small, proba_small = binary_rows(400, seed=4)
    p_value, chance = consistency_p_value(y_small, proba_small, 10, draws=200, seed=5)
    assert expected_calibration_error(y_small, proba_small, 10) < chance and p_value > 0.05
    assert chance > 0.03  # what 400 calibrated rows in 10 bins show from sampling noise alone
    mapping, report = decide(y_small, proba_small, max_ece=0.0)
    assert mapping is None and report.p_value == pytest.approx(p_value, abs=0.05)
    assert "not what chance gives calibrated probabilities on 400 rows" in report.reason


def test_a_map_that_does_not_help_out_of_sample_is_not_applied_and_the_report_says_why():
    # isotonic on 120 calibrated rows (alpha 1: past the chance test): fitted to the noise of one half, it
    # does not improve the other
    y, proba = binary_rows(120, seed=6)
    mapping, report = decide(y, proba, method="isotonic", max_ece=0.0, alpha=1.0)
    assert mapping is None and not report.applied
    assert "did not improve it out of sample" in report.reason and "log loss" in report.reason


def test_temperature_scaling_finds_a_multiclass_models_temperature_and_keeps_its_predicted_class():
    y, proba = multiclass_rows(6000, seed=8, temperature=0.4)
    mapping, report = decide(y, proba, classes=range(4))
    assert report.method == "temperature" and report.applied, report.reason
    assert mapping.temperature == pytest.approx(1 / 0.4, rel=0.15)
    calibrated = mapping.apply(proba)
    assert np.array_equal(calibrated.argmax(axis=1), proba.argmax(axis=1))
    assert np.allclose(calibrated.sum(axis=1), 1)
    y_new, proba_new = multiclass_rows(20_000, seed=9, temperature=0.4)
    assert expected_calibration_error(y_new, mapping.apply(proba_new), 10) < 0.02 < expected_calibration_error(
        y_new, proba_new, 10)


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_one_vs_rest_maps_give_multiclass_probabilities_that_sum_to_one(method):
    y, proba = multiclass_rows(5000, seed=10, temperature=0.5, k=3)
    mapping = fit_map(method, y, proba)
    out = mapping.apply(proba)
    assert out.shape == proba.shape and np.allclose(out.sum(axis=1), 1) and (out >= 0).all()
    assert expected_calibration_error(y, out, 10) < expected_calibration_error(y, proba, 10)


def test_reliability_bins_hold_every_row_and_name_their_range():
    y, proba = binary_rows(2000, seed=11, sharpen=2.0)
    bins = reliability(y, proba, 10)
    assert sum(b.rows for b in bins) == 2000
    assert all(b.low <= b.predicted <= b.high and 0 <= b.observed <= 1 for b in bins)
    # overconfident: the high bins happen less often than predicted, the low ones more often
    assert bins[-1].observed < bins[-1].predicted and bins[0].observed > bins[0].predicted


def test_an_unknown_method_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="sigmoid | isotonic | temperature"):
        fit_map("beta", np.array([0, 1]), np.array([[0.4, 0.6], [0.3, 0.7]]))


def test_a_calibrated_model_is_a_classifier_that_survives_joblib_and_refuses_to_be_refitted():
    rng = np.random.default_rng(12)
    X = rng.normal(size=(600, 3))
    y = (rng.random(600) < sigmoid(X @ [2.0, -1.0, 0.0])).astype(int)
    base = LogisticRegression(C=100).fit(X, y)
    model = CalibratedModel(base, ProbabilityMap("sigmoid", True, slopes=(0.5,), intercepts=(0.1,)))
    assert is_classifier(model) and list(model.classes_) == [0, 1]
    proba = model.predict_proba(X)
    assert np.allclose(proba.sum(axis=1), 1) and not np.allclose(proba, base.predict_proba(X))
    assert np.array_equal(model.predict(X), model.classes_[proba.argmax(axis=1)])
    buf = io.BytesIO()
    joblib.dump(model, buf)
    again = joblib.load(io.BytesIO(buf.getvalue()))
    assert np.array_equal(again.predict_proba(X), proba)
    result = permutation_importance(model, X, y, scoring="roc_auc", n_repeats=2, random_state=0)
    assert result.importances_mean[0] > result.importances_mean[2]  # scorers take it as a classifier
    with pytest.raises(TypeError, match="fitted by training"):
        model.fit(X, y)


# --------------------------------------------------------------------------------------------------
# real tables, through training and the registry
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, monkeypatch):
    def make(table, **config):
        monkeypatch.setenv("MLCYCLE_CONFIG", str(write_config(tmp_path / "mlcycle.yaml", table, **config)))
        return seed_table(tmp_path / "home", table)

    with one_thread_per_fit():
        yield make


@pytest.mark.parametrize("table, family, seed, method, applied", [
    (fair, "hist_gradient_boosting", 42, "sigmoid", False),  # validation ECE within max_ece: as fitted
    (fair, "logistic_regression", 42, "sigmoid", False),
    (anes96, "hist_gradient_boosting", 0, "temperature", True),  # overconfident: validation ECE 0.21
], ids=["fair-boosting", "fair-logistic", "anes96-boosting"])
def test_a_real_tables_version_carries_its_calibration_and_is_calibrated_exactly_when_it_says(
        project, table, family, seed, method, applied):
    settings, store = project(table(), family=family, training={"seed": seed})
    candidate, _, _, version = train_and_gate(store, settings)
    report = load_metadata(store, version.name, version.version).calibration
    assert report is not None and report.method == method and report.validation_rows > 200
    assert report == candidate.calibration and report.applied == applied, report.reason
    model = load_model(store, version.name, version.version)
    assert isinstance(model.pipeline, CalibratedModel) == applied
    assert report.test_ece_before is not None and report.test_ece_after is not None
    if applied:  # the test days, seen by neither the model nor its map, agree; the predicted class stays
        assert report.test_ece_after < report.test_ece_before / 2 and report.p_value < report.alpha
        assert "registered calibrated" in report.reason
        test = model_input(load_test_window(store, settings.dataset, candidate.split), candidate.features)
        assert np.array_equal(model.pipeline.predict(test), model.pipeline.model.predict(test))
    else:
        assert report.test_ece_after == report.test_ece_before
    rendered = store.get_bytes(version.artifacts["report.md"].key).decode()
    assert f"Calibration ({method}, 10 bins" in rendered and report.reason in rendered


def test_calibration_can_be_switched_off_and_regression_has_none(project, tmp_path, monkeypatch):
    settings, store = project(fair(), training={"calibration": {"enabled": False}})
    assert train_challenger(store, settings, select_window(store, days=DAYS)).calibration is None
    monkeypatch.setenv("MLCYCLE_CONFIG", str(write_config(tmp_path / "r.yaml", randhie(), family="ridge")))
    settings, store = seed_table(tmp_path / "regression", randhie())
    assert train_challenger(store, settings, select_window(store, days=DAYS)).calibration is None


def test_a_wrong_calibration_setting_fails_at_config_load_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCYCLE_CONFIG", str(write_config(tmp_path / "mlcycle.yaml", fair(),
                                                          training={"calibration": {"method": "beta"}})))
    with pytest.raises(ConfigError, match="training.calibration.method"):
        load_settings()


def test_the_monitors_estimate_says_how_calibrated_the_judged_versions_probabilities_are():
    from types import SimpleNamespace

    from mlcycle.tasks.monitor.assessment import calibration_note

    y, proba = binary_rows(3000, seed=13, sharpen=2.5)
    _, report = decide(y, proba)
    report = report.model_copy(update={"test_ece_after": 0.0123})
    assert calibration_note(SimpleNamespace(version=4, calibration=report)) == (
        "v4's probabilities are calibrated (sigmoid), test-day ECE 0.0123")
    as_fitted = report.model_copy(update={"applied": False})
    assert "as fitted (not calibrated)" in calibration_note(SimpleNamespace(version=4, calibration=as_fitted))
    assert "no calibration report" in calibration_note(SimpleNamespace(version=2, calibration=None))
