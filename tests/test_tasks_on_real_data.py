"""Every task end to end on the model side, on real tables that are not the demo (tests/support/datasets.py):
train, score, compare with the champion and gate through the real functions, with small budgets.

* ``fair`` (binary): promoted on floors alone; its leaky ``affairs`` column, or a synthetic column that is
  non-null exactly when the label is 1, is refused with the feature named;
* ``anes96`` (multiclass, 7 classes): better than a uniform guess, confusion matrix, class profile;
* ``randhie`` (regression): better than the mean, predicted-vs-actual and residuals, an estimator given by
  import path; wrong estimators fail at config load naming the problem.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlcycle.tasks.drift import decide_drift, prediction_drift
from mlcycle.tasks.profile import ReferenceProfile
from mlcycle.tasks.registry.aliases import promote
from mlcycle.tasks.registry.versions import list_versions, load_metadata, load_profile
from mlcycle.tasks.settings import ConfigError, load_settings
from mlcycle.tasks.training.challenger import train_challenger
from mlcycle.tasks.training.window import TrainingDataError, load_rows, select_window, time_split
from tests.support.datasets import anes96, fair, randhie
from tests.support.real_training import DAYS, seed_table, subset, train_and_gate, write_config
from tests.support.training import one_thread_per_fit

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread_per_fit():
        yield


@pytest.fixture
def project(tmp_path, monkeypatch):
    """``project(table, **config)`` -> (settings, store): a config file for the table and its validated days."""

    def make(table, *, frame=None, **config):
        monkeypatch.setenv("MLCYCLE_CONFIG", str(write_config(tmp_path / "mlcycle.yaml", table, **config)))
        return seed_table(tmp_path / "home", table, frame=frame)

    return make


def is_png(store, version, name) -> bool:
    """The plot was registered with the version (staged artifacts are dropped once registered)."""
    return store.get_bytes(version.artifacts[name].key)[:8] == PNG


# --------------------------------------------------------------------------------------------------
# binary: fair
# --------------------------------------------------------------------------------------------------


def test_binary_fair_is_promoted_on_floors_then_a_second_version_is_compared_on_the_same_rows(project):
    settings, store = project(fair(), gate={"floors": {"roc_auc": 0.65}}, family="logistic_regression")
    first, comparison, decision, version = train_and_gate(store, settings)
    metrics = first.scores.overall
    assert metrics.task == "binary" and set(metrics.values()) == {"roc_auc", "pr_auc", "log_loss", "brier", "f1",
                                                                  "recall", "precision"}
    assert 0.65 < metrics.roc_auc < 0.95 and all(v is not None for v in metrics.values().values())
    assert decision.promote, decision.summary
    assert comparison.champion_version is None and not decision.failed
    assert {"leakage", "too_perfect", "floor:roc_auc"} <= {r.rule for r in decision.rules}
    assert {"plots/roc.png", "plots/calibration.png"} == set(comparison.artifacts)
    assert is_png(store, version, "plots/roc.png")
    # numeric-coded categories ("occupation" 1.0..6.0 in the data, [1, 2, ...] in the config) are sliced by text
    assert ("occupation", "3") in {(s.feature, s.value) for s in first.scores.slices}
    promote(store, version.name, version.version, reason="test")

    second, comparison, decision, _ = train_and_gate(store, settings, family="hist_gradient_boosting")
    assert comparison.champion_version == 1 and comparison.champion_scores.overall.rows == metrics.rows
    assert comparison.champion_scores.overall.roc_auc == pytest.approx(metrics.roc_auc)
    assert comparison.bootstrap.observed == pytest.approx(second.scores.overall.roc_auc - metrics.roc_auc)
    assert "min_delta" in {r.rule for r in decision.rules}


def test_fair_with_its_leaky_affairs_column_is_refused_naming_it(project):
    settings, store = project(fair(), with_leak=True, gate={"floors": {"roc_auc": 0.65}})
    candidate, _, decision, version = train_and_gate(store, settings)
    assert candidate.leakage.features[0].feature == "affairs" and candidate.leakage.features[0].score >= 0.99
    assert not decision.promote
    failed = {r.rule for r in decision.failed}
    assert "leakage:affairs" in failed and "affairs alone predicts the target" in decision.summary
    assert all(r.rule in ("leakage:affairs", "too_perfect:roc_auc", "too_perfect:log_loss") for r in decision.failed)
    assert load_metadata(store, version.name, version.version).gate == decision  # registered, with its reasons
    assert [v.gate for v in list_versions(store, version.name)] == ["refused"]


def test_a_column_non_null_exactly_when_the_label_is_1_is_refused_as_a_leak(project):
    table = fair()
    frame = table.frame.copy()
    rng = np.random.default_rng(0)
    frame["followup_days"] = np.where(frame[table.target] == 1, rng.uniform(1, 400, len(frame)), np.nan)
    settings, store = project(table, frame=frame, extra_numeric=("followup_days",),
                              gate={"floors": {"roc_auc": 0.65}})
    candidate, _, decision, _ = train_and_gate(store, settings)
    assert candidate.leakage.score("followup_days") == pytest.approx(1.0)
    assert "leakage:followup_days" in {r.rule for r in decision.failed} and not decision.promote
    leak = next(r for r in decision.rules if r.rule == "leakage:followup_days")
    assert leak.observed == pytest.approx(1.0) and leak.required == "< 0.99"
    # the guard can be switched off (gate.leakage.enabled), and then says nothing about features
    relaxed = settings.model_copy(update={"gate": settings.gate.model_copy(update={
        "leakage": settings.gate.leakage.model_copy(update={"enabled": False})})})
    unguarded = train_challenger(store, relaxed, select_window(store, days=DAYS))
    assert unguarded.leakage is None


# --------------------------------------------------------------------------------------------------
# multiclass: anes96
# --------------------------------------------------------------------------------------------------


def test_multiclass_anes96_beats_a_uniform_guess_and_is_compared_with_its_champion(project):
    settings, store = project(anes96())
    spec = settings.dataset
    assert spec.class_labels == ["0", "1", "2", "3", "4", "5", "6"]
    first, comparison, decision, version = train_and_gate(store, settings)
    metrics = first.scores.overall
    assert metrics.task == "multiclass" and metrics.roc_auc is None and metrics.positives is None
    assert metrics.log_loss < math.log(7)
    assert 1 / 7 < metrics.accuracy <= 1 and 1 / 7 < metrics.balanced_accuracy <= 1
    assert 0.5 < metrics.roc_auc_ovr <= 1 and 0 < metrics.f1_macro <= 1
    assert first.search.scoring == "neg_log_loss" and first.leakage.metric == "balanced_accuracy"
    assert first.split.test.classes and sum(first.split.test.classes.values()) == first.split.test.rows
    assert set(comparison.artifacts) == {"plots/confusion_matrix.png"}
    assert is_png(store, version, "plots/confusion_matrix.png")
    assert decision.promote, decision.summary  # no champion, no multiclass floor by default
    profile = load_profile(store, version.name, version.version)
    assert profile.task == "multiclass" and profile.predictions.kind == "max_probability"
    assert list(profile.predictions.class_frequencies) == spec.class_labels
    assert sum(profile.target.class_frequencies.values()) == pytest.approx(1)
    promote(store, version.name, version.version, reason="test")

    second, comparison, decision, version = train_and_gate(store, settings, family="logistic_regression")
    mine, theirs = second.scores.overall.log_loss, comparison.champion_scores.overall.log_loss
    assert theirs == pytest.approx(metrics.log_loss)
    assert comparison.bootstrap.observed == pytest.approx(theirs - mine)  # lower log loss is an improvement
    listing = list_versions(store, version.name)[0]
    assert set(listing.metrics) == {"log_loss", "f1_macro", "balanced_accuracy"}


def test_multiclass_predicted_classes_drift_is_a_categorical_test(project):
    settings, store = project(anes96())
    candidate = train_challenger(store, settings, select_window(store, days=DAYS))
    profile = ReferenceProfile.model_validate_json(store.get_bytes(candidate.artifacts["reference_profile.json"].key))
    shares = profile.predictions.class_frequencies
    rng = np.random.default_rng(0)
    same = rng.choice(list(shares), size=2000, p=np.array(list(shares.values())))
    steady = decide_drift([], prediction_drift(profile, same), 2000, settings.drift).prediction
    assert steady.test == "chi2" and not steady.drifted
    moved = decide_drift([], prediction_drift(profile, np.full(2000, 6)), 2000, settings.drift).prediction
    assert moved.drifted and moved.psi >= settings.drift.prediction_psi_threshold  # numbers count as their text


def test_a_split_lacking_classes_is_refused_naming_the_split_and_the_classes(project):
    settings, store = project(anes96())
    window = select_window(store, days=DAYS)
    frame = load_rows(store, settings.dataset, window.partitions)
    frame[settings.dataset.target] = 2
    with pytest.raises(TrainingDataError, match=r"the train window .* single class of 'PID' \('2' in all .* it "
                                                 r"lacks \['0', '1', '3', '4', '5', '6'\]"):
        time_split(frame, settings.dataset, settings.training, window.partitions)


# --------------------------------------------------------------------------------------------------
# regression: randhie
# --------------------------------------------------------------------------------------------------


def test_regression_randhie_beats_the_mean_and_an_import_path_estimator_is_compared(project):
    settings, store = project(subset(randhie(), 6000))
    first, comparison, decision, version = train_and_gate(store, settings)
    metrics = first.scores.overall
    assert metrics.task == "regression" and set(metrics.values()) == {"rmse", "mae", "r2"}
    assert metrics.r2 > 0 and 0 < metrics.mae < metrics.rmse
    assert first.search.scoring == "neg_root_mean_squared_error" and first.leakage.metric == "r2"
    assert first.split.test.target_mean > 0 and first.split.test.positives is None
    assert decision.promote, decision.summary  # floor r2 >= 0 by default
    assert set(comparison.artifacts) == {"plots/predicted_vs_actual.png", "plots/residuals.png"}
    assert all(is_png(store, version, p) for p in comparison.artifacts)
    profile = load_profile(store, version.name, version.version)
    assert profile.predictions.kind == "value" and profile.target.mean > 0 and profile.label_rate is None
    promote(store, version.name, version.version, reason="test")

    second, comparison, decision, _ = train_and_gate(store, settings, family="forest")
    assert second.estimator == "sklearn.ensemble.RandomForestRegressor" and second.params["n_estimators"] == 25
    mine, theirs = second.scores.overall.rmse, comparison.champion_scores.overall.rmse
    assert theirs == pytest.approx(metrics.rmse)
    assert comparison.bootstrap.metric == "rmse"
    assert comparison.bootstrap.observed == pytest.approx(theirs - mine)  # lower RMSE is an improvement
    shifted = prediction_drift(profile, np.full(1000, profile.predictions.quantiles["p99"] * 3))
    assert shifted.test == "ks" and shifted.psi > 1


@pytest.mark.parametrize(("estimator", "problem"), [
    ("sklearn.ensemble.RandomForestClassifier", "is a classifier; a regression task needs a regressor"),
    ("nosuchpackage.models.Forest", "cannot import module 'nosuchpackage.models'"),
    ("collections.OrderedDict", "lacks ['fit', 'predict', 'get_params', 'set_params']"),
    ("sklearn.ensemble.NoSuchForest", "has no class 'NoSuchForest'"),
])
def test_a_wrong_estimator_fails_at_config_load_naming_the_problem(tmp_path, monkeypatch, estimator, problem):
    table = subset(randhie(), 500)
    monkeypatch.setenv("MLCYCLE_CONFIG", str(write_config(tmp_path / "mlcycle.yaml", table, family="forest")))
    with pytest.raises(ConfigError) as caught:
        load_settings(home=tmp_path, training={"families": {"forest": {"estimator": estimator}}})
    assert "training.families.forest.estimator" in str(caught.value) and problem in str(caught.value)


def test_an_import_path_estimator_checks_its_parameters_by_name(project):
    from mlcycle.tasks.features import resolve_family

    settings, _ = project(subset(randhie(), 500))
    bad = settings.model_copy(update={"training": settings.training.model_copy(update={"families": {
        **settings.training.families, "forest": settings.training.families["forest"].model_copy(
            update={"params": {"n_trees": 10}})}})})
    with pytest.raises(ConfigError, match=r"families.forest.params names unknown parameter\(s\) \['n_trees'\] of "
                                          r"RandomForestRegressor"):
        resolve_family(bad, "forest")


def test_served_model_carries_task_classes_and_positive_label(project):
    from mlcycle.tasks.serving.packaging import served_model_from

    settings, store = project(anes96())
    *_, version = train_and_gate(store, settings)
    served = served_model_from(load_metadata(store, version.name, version.version), settings.dataset, "memory://")
    assert (served.task, served.classes, served.positive_label) == ("multiclass", settings.dataset.class_labels, None)
    assert set(served.lineage.metrics) == {"log_loss", "f1_macro", "balanced_accuracy", "roc_auc_ovr", "accuracy"}


def test_a_categorical_copy_of_the_class_is_a_leak_and_the_real_features_are_not(project):
    from mlcycle.tasks.settings import FeatureSpec
    from mlcycle.tasks.training.leakage import check_leakage
    from mlcycle.tasks.training.window import labels

    table = anes96()
    frame = table.frame.copy()
    frame["party_code"] = frame[table.target].map(lambda v: f"code-{int(v)}")
    frame.loc[frame.index[::40], "party_code"] = None  # a few missing: still a leak
    settings, store = project(table, frame=frame)
    code = FeatureSpec(name="party_code", kind="categorical", categories=[f"code-{i}" for i in range(7)],
                       nullable=True)
    spec = settings.dataset.model_copy(update={"features": [*settings.dataset.features, code]})
    window = select_window(store, days=DAYS)
    frames = time_split(load_rows(store, spec, window.partitions), spec, settings.training, window.partitions)[1]
    y = {name: labels(part, spec) for name, part in frames.items()}
    check = check_leakage(frames, y, spec.features, spec, settings.gate.leakage, seed=0)
    assert check.metric == "balanced_accuracy" and check.features[0].feature == "party_code"
    assert check.score("party_code") > 0.95
    assert all(f.score < 0.6 for f in check.features[1:])


def test_a_rescaled_copy_of_a_regression_target_is_a_leak(project):
    from mlcycle.tasks.settings import FeatureSpec
    from mlcycle.tasks.training.leakage import check_leakage
    from mlcycle.tasks.training.window import labels

    table = subset(randhie(), 4000)
    frame = table.frame.copy()
    frame["half_days"] = frame[table.target] * 2.0  # the same count in another unit
    settings, store = project(table, frame=frame)
    spec = settings.dataset.model_copy(update={"features": [*settings.dataset.features,
                                                            FeatureSpec(name="half_days", kind="numeric")]})
    window = select_window(store, days=DAYS)
    frames = time_split(load_rows(store, spec, window.partitions), spec, settings.training, window.partitions)[1]
    y = {name: labels(part, spec) for name, part in frames.items()}
    check = check_leakage(frames, y, spec.features, spec, settings.gate.leakage, seed=0)
    assert check.metric == "r2" and check.features[0].feature == "half_days" and check.score("half_days") > 0.999
    assert all(f.score < 0.5 for f in check.features[1:])
