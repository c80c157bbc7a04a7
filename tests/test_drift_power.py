"""Statistical behaviour of the drift decision (seeded): false alarms, power, not-enough-data."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.drift import assess_drift
from mlcycle.tasks.profile import build_profile
from mlcycle.tasks.simulator import simulate_batch

WINDOWS = 40
N = 5000


def score(frame: pd.DataFrame) -> np.ndarray:
    """A fixed stand-in model: the same function scores reference and current rows."""
    z = 3.0 * (frame["debt_ratio"].to_numpy() - 0.42) - 0.01 * (frame["credit_score"].to_numpy() - 650)
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from mlcycle.tasks.settings import load_settings

    settings = load_settings(home=tmp_path_factory.mktemp("drift"))
    sim = settings.simulator.model_copy(update={"drift": []})
    spec = settings.dataset
    reference = pd.concat([simulate_batch(dt.date(2026, 1, 1) + dt.timedelta(days=i), sim, spec, rows=10_000).frame
                           for i in range(5)], ignore_index=True)
    profile = build_profile(reference, spec.features, reference[spec.target].to_numpy(), score(reference),
                            dataset=spec.name, dataset_schema_hash=spec.schema_hash(), n_bins=10,
                            created_at=dt.datetime(2026, 1, 6, tzinfo=dt.UTC),
                            sample_size=settings.drift.reference_sample_size, seed=1)
    windows = []
    for i in range(WINDOWS):
        frame = simulate_batch(dt.date(2026, 3, 1) + dt.timedelta(days=i), sim, spec, rows=N).frame
        windows.append(frame)
    return settings, spec, profile, windows


def _assess(settings, spec, profile, frame):
    current = frame.assign(probability=score(frame))
    return assess_drift(profile, current, spec, settings.drift)


def test_false_alarm_rate_of_the_dataset_decision_is_at_most_5_percent(world):
    settings, spec, profile, windows = world
    alarms = [_assess(settings, spec, profile, w).dataset_drift for w in windows]
    assert len(alarms) >= 40
    assert np.mean(alarms) <= 0.05, f"{sum(alarms)} false alarms in {len(alarms)} windows"


def test_half_sd_shift_of_one_numeric_feature_is_detected_in_95_percent_of_windows(world):
    settings, spec, profile, windows = world
    sd = profile.numeric["credit_score"].std
    detected = []
    for w in windows:
        shifted = w.assign(credit_score=w["credit_score"] + 0.5 * sd)
        decision = _assess(settings, spec, profile, shifted)
        detected.append("credit_score" in decision.drifted_features)
    assert np.mean(detected) >= 0.95, f"detected in {sum(detected)} of {len(detected)} windows"


def test_half_sd_shift_of_the_critical_feature_is_a_dataset_drift(world):
    settings, spec, profile, windows = world
    assert spec.feature("debt_ratio").critical
    sd = profile.numeric["debt_ratio"].std
    decisions = [_assess(settings, spec, profile, w.assign(debt_ratio=w["debt_ratio"] + 0.5 * sd))
                 for w in windows[:10]]
    assert all(d.dataset_drift for d in decisions)
    assert "critical feature(s) drifted: debt_ratio" in decisions[0].reasons


def test_ten_point_shift_in_one_category_share_is_detected_in_95_percent_of_windows(world):
    settings, spec, profile, windows = world
    rng = np.random.default_rng(7)
    detected = []
    for w in windows:
        region = w["region"].to_numpy(dtype=object).copy()
        others = np.flatnonzero(region != "north")
        # move 10 points of the whole window's share from the other regions to "north"
        move = rng.choice(others, size=int(0.10 * len(w)), replace=False)
        region[move] = "north"
        decision = _assess(settings, spec, profile, w.assign(region=region))
        detected.append("region" in decision.drifted_features)
    assert np.mean(detected) >= 0.95, f"detected in {sum(detected)} of {len(detected)} windows"


def test_unseen_category_and_null_surge_are_named_with_their_reasons(world):
    settings, spec, profile, windows = world
    w = windows[0].copy()
    w.loc[: int(0.05 * len(w)), "loan_purpose"] = "crypto"
    w.loc[: int(0.2 * len(w)), "employment_years"] = np.nan
    decision = _assess(settings, spec, profile, w)
    by_name = {f.feature: f for f in decision.features}
    assert by_name["loan_purpose"].drifted and "unseen categories" in by_name["loan_purpose"].reasons[0]
    assert by_name["employment_years"].drifted
    assert any("null rate" in r for r in by_name["employment_years"].reasons)


def test_below_the_minimum_rows_no_decision_is_made(world):
    settings, spec, profile, windows = world
    small = windows[0].iloc[: settings.drift.min_rows - 1]
    decision = _assess(settings, spec, profile, small)
    assert not decision.enough_data and not decision.dataset_drift
    assert decision.summary().startswith("not enough data")


def test_p_values_are_corrected_across_features(world):
    settings, spec, profile, windows = world
    decision = _assess(settings, spec, profile, windows[1])
    tested = [f for f in decision.features if f.p_value is not None]
    assert tested and all(f.p_adjusted >= f.p_value for f in tested)
