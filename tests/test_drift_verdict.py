"""The dataset-level verdict that says whether drift matters: drifted features weighed by the model's importance,
the multivariate test and the label-free estimate, each with its reason in words; the old share rule on demand."""

from __future__ import annotations

import datetime as dt

from mlcycle.tasks.drift import decide_drift, importance_weights
from mlcycle.tasks.monitor.window import assemble_report as report_of
from mlcycle.tasks.records.monitoring import FeatureDrift, MonitorWindow, MultivariateDrift, PerformanceEstimate

T0 = dt.datetime(2026, 10, 23, tzinfo=dt.UTC)
# a panel of ten features where the model leans on two: income and tenure hold 80% of the importance
IMPORTANCE = {"income": 0.05, "tenure": 0.03, **{f"f{i}": 0.0025 for i in range(8)}}


def feature(name: str, drifted: bool) -> FeatureDrift:
    return FeatureDrift(feature=name, kind="numeric", n_reference=5000, n_current=2000, test="ks",
                        p_value=1e-12 if drifted else 0.8, psi=0.6 if drifted else 0.01,
                        wasserstein_norm=0.5 if drifted else 0.01, null_p_value=1.0)


def window(drifted: set[str]) -> list[FeatureDrift]:
    return [feature(name, name in drifted) for name in IMPORTANCE]


def config(settings, **update):
    return settings.drift.model_copy(update=update)


def test_four_unimportant_features_drifting_is_not_drift_that_matters(settings):
    decision = decide_drift(window({"f0", "f1", "f2", "f3"}), None, 2000, config(settings), importances=IMPORTANCE)
    assert decision.rule == "importance" and not decision.dataset_drift
    assert decision.importance_share is not None and decision.importance_share == 0.1
    assert decision.verdict.startswith("4 of 10 features drifted (40%), holding 10% of the model's importance, "
                                       "below the 50% share")


def test_the_two_features_the_model_reads_drifting_is_drift_even_below_the_old_share(settings):
    decision = decide_drift(window({"income", "tenure"}), None, 2000, config(settings), importances=IMPORTANCE)
    assert decision.dataset_drift and decision.importance_share == 0.8
    assert decision.reasons == ["drifted features hold 80% of the model's importance (>= 50%): income 50%, tenure 30%"]
    # the old rule, kept as a setting, counts them alike: 2 of 10 is below its 50% share
    old = decide_drift(window({"income", "tenure"}), None, 2000, config(settings, rule="share"), importances=IMPORTANCE)
    assert old.rule == "share" and not old.dataset_drift and "2 of 10 features drifted (20%), below" in old.verdict


def test_without_importances_the_share_rule_decides_and_the_verdict_says_so(settings):
    decision = decide_drift(window({"f0", "f1", "f2", "f3", "f4"}), None, 2000, config(settings), importances=None)
    assert decision.rule == "share" and decision.dataset_drift
    assert "no importances recorded for this version: features counted alike" in decision.verdict
    # importances that are all zero or negative rank nothing either
    assert importance_weights({"a": -0.01, "b": 0.0}, ["a", "b"]) is None
    assert importance_weights({"a": -0.01, "b": 0.03}, ["a", "b"]) == {"a": 0.0, "b": 1.0}


def test_a_joint_change_alone_is_dataset_drift_with_its_reason(settings):
    joint = MultivariateDrift(n_reference=5000, n_current=2000, features=list(IMPORTANCE), auc=0.71, p_value=1e-40,
                              alpha=0.05, effect_threshold=0.55, drifted=True,
                              detail="a classifier tells current rows from reference rows with AUC 0.710")
    decision = decide_drift(window(set()), None, 2000, config(settings), importances=IMPORTANCE, multivariate=joint)
    assert decision.dataset_drift and decision.reasons == [f"multivariate drift: {joint.detail}"]
    assert "the joint distribution changed (domain classifier AUC 0.710): dataset drift" in decision.verdict
    calm = joint.model_copy(update={"auc": 0.51, "p_value": 0.4, "drifted": False})
    quiet = decide_drift(window(set()), None, 2000, config(settings), importances=IMPORTANCE, multivariate=calm)
    assert not quiet.dataset_drift and "the joint distribution did not change (domain classifier AUC 0.510)" in \
        quiet.verdict


def test_an_estimated_drop_warrants_retraining_without_any_drift(settings):
    decision = decide_drift(window(set()), None, 2000, config(settings), importances=IMPORTANCE)
    estimate = PerformanceEstimate(method="cbpe", metric="roc_auc", rows=2000, tolerance=0.05, reference_value=0.84,
                                   worse_by=0.09, degraded=True, detail="estimated roc_auc 0.75 ...: drop of 0.09")
    w = MonitorWindow(model="m", version=1, start=T0 - dt.timedelta(hours=24), end=T0)
    report = report_of(w, 2000, decision, None, estimate)
    assert not decision.dataset_drift and report.retrain_warranted
    assert report.reasons == [f"estimated performance: {estimate.detail}"]
    steady = report_of(w, 2000, decision, None, estimate.model_copy(update={"degraded": False, "worse_by": 0.01}))
    assert not steady.retrain_warranted
