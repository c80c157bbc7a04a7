"""The evaluation gate: its rules, the paired bootstrap, and the three decisions that matter.

* a model trained on shuffled labels is registered but refused, and the champion does not move;
* a genuinely better model is promoted;
* a model better overall but much worse on one slice is refused, the reason naming the slice.
"""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from mlcycle.tasks.evaluation.bootstrap import paired_bootstrap
from mlcycle.tasks.evaluation.gate import apply_gate, decide
from mlcycle.tasks.evaluation.metrics import (
    compute_metrics,
    score_model,
    weighted_average_precision,
    weighted_roc_auc,
)
from mlcycle.tasks.records.evaluation import ModelScores
from mlcycle.tasks.registry.aliases import promote
from mlcycle.tasks.registry.registration import register_candidate
from mlcycle.tasks.registry.versions import list_versions, load_metadata, read_alias
from mlcycle.tasks.simulator import default_log_odds
from mlcycle.tasks.training.challenger import compare_with_champion, train_challenger
from mlcycle.tasks.training.window import load_test_window, select_window
from tests.support.training import (
    DAYS,
    START,
    fast_settings,
    one_thread_per_fit,
    simulated,
    write_day,
)

NAME = "loans-default"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread_per_fit():
        yield


def _scores(y, p, features=(), frame=None, threshold=0.5) -> ModelScores:
    return score_model(frame, y, p, list(features), threshold) if features else ModelScores(
        overall=compute_metrics(y, p, threshold))


def _synthetic(n=4000, seed=0):
    """Labels drawn from a logistic model of one signal (about 30% positives)."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (rng.random(n) < _model(signal, rng, noise=0.0)).astype(int)
    return rng, signal, y


def _model(signal, rng, noise: float):
    """A calibrated-ish model: the true log-odds plus noise of the given standard deviation."""
    return 1 / (1 + np.exp(-(1.5 * signal - 1.1 + rng.normal(0, noise, len(signal)))))


# --------------------------------------------------------------------------------------------------
# metrics and the bootstrap
# --------------------------------------------------------------------------------------------------


def test_metrics_match_scikit_learn():
    rng, signal, y = _synthetic()
    p = np.round(_model(signal, rng, noise=0.5), 2)  # rounded: ties exercise the tie handling
    m = compute_metrics(y, p, threshold=0.3)
    assert m.roc_auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m.pr_auc == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert m.log_loss == pytest.approx(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)), abs=1e-9)
    assert m.brier == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    weights = rng.integers(0, 3, len(y))
    rows = np.repeat(np.arange(len(y)), weights)
    assert weighted_roc_auc(y, p, weights[None, :].astype(float))[0] == pytest.approx(roc_auc_score(y[rows], p[rows]))
    assert weighted_average_precision(y, p, weights[None, :].astype(float))[0] == pytest.approx(
        average_precision_score(y[rows], p[rows]))
    assert compute_metrics(np.zeros(10), np.full(10, 0.2), 0.5).roc_auc is None  # one class: undefined


def test_paired_bootstrap_is_seeded_vectorised_and_fast():
    rng, signal, y = _synthetic(n=5000)
    better = _model(signal, rng, noise=0.3)
    worse = _model(signal, rng, noise=1.5)
    started = time.process_time()  # CPU time: the machine may be busy with other work
    result = paired_bootstrap(y, better, worse, "roc_auc", samples=1000, seed=3)
    assert time.process_time() - started < 2.0
    assert result == paired_bootstrap(y, better, worse, "roc_auc", samples=1000, seed=3)
    assert result.observed == pytest.approx(roc_auc_score(y, better) - roc_auc_score(y, worse))
    assert 0 < result.low < result.observed < result.high and result.valid_samples == 1000
    same = paired_bootstrap(y, better, better, "roc_auc", samples=200, seed=3)
    assert same.low == same.high == 0.0
    loss = paired_bootstrap(y, better, worse, "log_loss", samples=200, seed=3)
    assert loss.observed > 0 and loss.low > 0  # lower loss is an improvement: positive


# --------------------------------------------------------------------------------------------------
# the rules
# --------------------------------------------------------------------------------------------------


def test_without_a_champion_only_the_floors_apply(tmp_path):
    gate = fast_settings(tmp_path).gate.model_copy(update={"floors": {"roc_auc": 0.7, "recall": 0.9}})
    rng, signal, y = _synthetic()
    p = _model(signal, rng, noise=0.3)
    decision = apply_gate(gate, _scores(y, p))
    assert not decision.promote
    assert [r.rule for r in decision.failed] == ["floor:recall"]
    assert "recall" in decision.summary and "< 0.9" in decision.summary
    assert [r for r in decision.rules if r.rule == "champion"][0].detail.startswith("no champion yet")
    relaxed = gate.model_copy(update={"floors": {"roc_auc": 0.7}})
    assert apply_gate(relaxed, _scores(y, p)).promote


def test_a_champion_that_cannot_be_scored_blocks_promotion(tmp_path):
    gate = fast_settings(tmp_path).gate
    rng, signal, y = _synthetic()
    decision = apply_gate(gate, _scores(y, _model(signal, rng, noise=0.3)), champion_version=4,
                          champion_error="SchemaMismatch: the data has no column(s) ['tenure']")
    assert not decision.promote
    assert "champion v4 could not be scored" in decision.summary and "tenure" in decision.summary


def test_small_improvement_is_refused_by_min_delta_and_confidence_interval(tmp_path):
    gate = fast_settings(tmp_path).gate
    rng, signal, y = _synthetic(n=3000)
    champion = _model(signal, rng, noise=0.8)
    challenger = np.clip(champion + rng.normal(0, 0.002, len(y)), 0, 1)  # as good, give or take noise
    boot = paired_bootstrap(y, challenger, champion, "roc_auc", samples=300, seed=0)
    decision = apply_gate(gate, _scores(y, challenger), _scores(y, champion), champion_version=1, bootstrap=boot)
    assert not decision.promote
    failed = {r.rule for r in decision.failed}
    assert "bootstrap_ci" in failed
    ci = next(r for r in decision.rules if r.rule == "bootstrap_ci")
    assert ci.observed == boot.low and "does not lie above zero" in ci.detail


def test_slice_degradation_blocks_promotion_naming_the_slice(train_env):
    """Better overall than the champion, but ranks the 'education' loans at random."""
    settings, store = train_env
    test = simulated(settings, START + dt.timedelta(days=DAYS + 3), rows=4000)
    y = test[settings.dataset.target].to_numpy()
    true_logit = default_log_odds(test)
    rng = np.random.default_rng(1)
    champion = 1 / (1 + np.exp(-(true_logit + rng.normal(0, 1.2, len(y)))))  # a noisy, weaker model
    challenger = 1 / (1 + np.exp(-true_logit))  # the simulator's own probability...
    education = (test["loan_purpose"] == "education").to_numpy()
    challenger[education] = challenger[education].mean() + rng.normal(0, 0.01, education.sum())  # ...but here
    slices = ["region", "loan_purpose", "employment_type"]
    mine, theirs = score_model(test, y, challenger, slices, 0.5), score_model(test, y, champion, slices, 0.5)
    boot = paired_bootstrap(y, challenger, champion, "roc_auc", samples=300, seed=0)
    decision = apply_gate(settings.gate, mine, theirs, champion_version=3, bootstrap=boot)

    assert mine.overall.roc_auc > theirs.overall.roc_auc + settings.gate.min_delta and boot.low > 0
    assert not decision.promote
    assert [r.rule for r in decision.failed] == ["slice:loan_purpose=education"]
    assert "loan_purpose=education" in decision.summary and "max_slice_drop 0.05" in decision.summary
    # the same challenger with the slice intact is promoted
    whole = 1 / (1 + np.exp(-true_logit))
    fixed = apply_gate(settings.gate, score_model(test, y, whole, slices, 0.5), theirs, champion_version=3,
                       bootstrap=paired_bootstrap(y, whole, champion, "roc_auc", samples=300, seed=0))
    assert fixed.promote, fixed.summary


def test_small_slices_are_not_judged(tmp_path):
    gate = fast_settings(tmp_path).gate.model_copy(update={"min_slice_rows": 10_000})
    rng, signal, y = _synthetic(n=3000)
    import pandas as pd

    frame = pd.DataFrame({"region": np.where(rng.random(len(y)) < 0.5, "north", "south")})
    champion = _model(signal, rng, noise=1.5)
    challenger = _model(signal, rng, noise=0.0)
    decision = apply_gate(gate, _scores(y, challenger, ["region"], frame), _scores(y, champion, ["region"], frame),
                          champion_version=1, bootstrap=paired_bootstrap(y, challenger, champion, "roc_auc",
                                                                         samples=200, seed=0))
    assert decision.promote and not any(r.rule.startswith("slice:") for r in decision.rules)


# --------------------------------------------------------------------------------------------------
# the decisions, through training, scoring and the registry
# --------------------------------------------------------------------------------------------------


def _train_and_register(store, settings, *, family=None):
    candidate = train_challenger(store, settings, select_window(store, days=DAYS), family=family)
    comparison = compare_with_champion(store, settings, candidate)
    decision = decide(settings.gate, candidate, comparison)
    version = register_candidate(store, candidate, comparison, decision)
    if decision.promote:
        promote(store, version.name, version.version, reason="gate", expected_champion=decision.champion_version)
    return version, decision, comparison


def test_gate_refuses_model_trained_on_shuffled_labels_and_champion_stays(train_env):
    settings, store = train_env
    champion, first, _ = _train_and_register(store, settings)
    assert first.promote and read_alias(store, NAME).version == champion.version == 1

    # the same days, but the labels of the training and validation days shuffled (test days intact)
    rng = np.random.default_rng(0)
    for day in [START + dt.timedelta(days=i) for i in range(DAYS - 2)]:
        frame = simulated(settings, day)
        frame[settings.dataset.target] = rng.permutation(frame[settings.dataset.target].to_numpy())
        write_day(store, settings, frame, day, replace=True)

    version, decision, comparison = _train_and_register(store, settings)
    assert version.version == 2 and not decision.promote  # registered, refused
    failed = {r.rule for r in decision.failed}
    assert {"floor:roc_auc", "min_delta", "bootstrap_ci"} <= failed
    assert comparison.champion_version == 1 and version.metrics.roc_auc < 0.6
    assert read_alias(store, NAME).version == 1  # the champion did not move
    stored = load_metadata(store, NAME, 2)
    assert stored.gate == decision and not stored.gate.promote
    assert [v.gate for v in list_versions(store, NAME)] == ["refused", "promote"]


def test_genuinely_better_model_is_promoted(train_env):
    settings, store = train_env
    weak = fast_settings(settings.home, training={"features": ["age", "region"]})
    champion, decision, _ = _train_and_register(store, weak)
    assert not decision.promote  # it misses the ROC AUC floor...
    promote(store, NAME, champion.version, reason="baseline")  # ...so an operator promoted it by hand

    better, decision, comparison = _train_and_register(store, settings, family="hist_gradient_boosting")
    assert decision.promote, decision.summary
    assert comparison.champion_version == 1 and comparison.bootstrap.low > 0
    assert better.metrics.roc_auc > comparison.champion_scores.overall.roc_auc + 0.1
    pointer = read_alias(store, NAME)
    assert (pointer.version, pointer.previous.version) == (2, 1)
    assert {r.rule for r in decision.rules} >= {"floor:roc_auc", "ceiling:brier", "min_delta", "bootstrap_ci",
                                                "slice:region=south"}


def test_champion_is_scored_on_exactly_the_challengers_test_rows(train_env):
    settings, store = train_env
    _train_and_register(store, settings)
    candidate = train_challenger(store, settings, select_window(store, days=DAYS))
    comparison = compare_with_champion(store, settings, candidate)
    test = load_test_window(store, settings.dataset, candidate.split)
    assert comparison.champion_scores.overall.rows == candidate.scores.overall.rows == len(test)
    assert set(comparison.artifacts) == {"plots/roc.png", "plots/calibration.png"}
    assert store.get_bytes(comparison.artifacts["plots/roc.png"].key)[:8] == b"\x89PNG\r\n\x1a\n"
