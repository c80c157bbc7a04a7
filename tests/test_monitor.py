"""Monitoring logic without Prefect: windows, the live-performance trigger, the trigger ledger's rules."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.monitor.trigger import TRIGGERS, claim_trigger, update_trigger
from mlcycle.tasks.monitor.performance import check_performance
from mlcycle.tasks.monitor.window import window_for
from mlcycle.tasks.records.monitoring import DriftDecision, MonitorReport, MonitorWindow

T0 = dt.datetime(2026, 10, 23, tzinfo=dt.UTC)


def test_windows_align_to_the_hour_and_repeat_the_same_id():
    a = window_for("m", 3, 24, dt.datetime(2026, 10, 23, 5, tzinfo=dt.UTC))
    assert a.start == dt.datetime(2026, 10, 22, 5, tzinfo=dt.UTC) and a.dates() == [dt.date(2026, 10, 22),
                                                                                     dt.date(2026, 10, 23)]
    assert a.window_id == window_for("m", 3, 24, dt.datetime(2026, 10, 23, 5, tzinfo=dt.UTC)).window_id
    assert a.window_id != window_for("m", 4, 24, dt.datetime(2026, 10, 23, 5, tzinfo=dt.UTC)).window_id
    with pytest.raises(ValueError, match="is not before its end"):
        window_for("m", 3, 24, T0, start=T0)


def _rows(settings, n: int, auc_noise: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 * y + 0.25 + rng.normal(0, auc_noise, n), 0, 1)
    return pd.DataFrame({settings.dataset.target: pd.array(y, dtype="Int64"), "probability": p})


def test_live_performance_drop_beyond_tolerance_is_a_trigger(settings):
    good = check_performance(_rows(settings, 1000, 0.2), settings.dataset, {"roc_auc": 0.85}, settings.monitor)
    bad = check_performance(_rows(settings, 1000, 1.5), settings.dataset, {"roc_auc": 0.85}, settings.monitor)
    assert not good.degraded and good.live_value > 0.8
    assert bad.degraded and bad.live_value < 0.8 and "drop" in bad.detail


def test_too_few_labels_decide_nothing(settings):
    rows = _rows(settings, 1000, 0.2)
    rows.loc[50:, settings.dataset.target] = pd.NA
    check = check_performance(rows, settings.dataset, {"roc_auc": 0.85}, settings.monitor)
    assert not check.degraded and check.live_value is None and "not enough labels" in check.detail


def _report(window_id: str, drift: bool = True) -> MonitorReport:
    window = MonitorWindow(model="m", champion_version=1, start=T0 - dt.timedelta(hours=24), end=T0)
    decision = DriftDecision(enough_data=True, rows=1000, min_rows=500, dataset_drift=drift,
                             reasons=["critical feature(s) drifted: debt_ratio"] if drift else [])
    return MonitorReport(window_id=window_id, window=window, rows=1000, drift=decision, performance=None,
                         reasons=list(decision.reasons))


def test_ledger_allows_one_trigger_per_window_and_honours_the_cooldown(store):
    first = claim_trigger(store, _report("w1"), T0, cooldown_hours=24)
    assert first.triggered and first.record.seq == 1
    assert claim_trigger(store, _report("w1"), T0 + dt.timedelta(days=3), 24).outcome == "already-triggered"
    assert claim_trigger(store, _report("w2"), T0 + dt.timedelta(hours=5), 24).outcome == "cooldown"
    later = claim_trigger(store, _report("w3"), T0 + dt.timedelta(hours=25), 24)
    assert later.triggered and later.record.seq == 2


def test_no_drift_and_not_enough_data_never_claim(store):
    assert claim_trigger(store, _report("w", drift=False), T0, 24).outcome == "not-warranted"
    thin = _report("w")
    thin.drift = DriftDecision(enough_data=False, rows=10, min_rows=500)
    assert claim_trigger(store, thin, T0, 24).outcome == "not-enough-data"
    assert store.list(TRIGGERS) == []


def test_a_failed_start_frees_the_window(store):
    claimed = claim_trigger(store, _report("w1"), T0, cooldown_hours=0)
    update_trigger(store, claimed.record.model_copy(update={"status": "failed"}))
    again = claim_trigger(store, _report("w1"), T0 + dt.timedelta(minutes=5), cooldown_hours=0)
    assert again.triggered and again.record.seq == 2


def test_training_in_flight_blocks_a_trigger(store):
    decision = claim_trigger(store, _report("w1"), T0, 24, training_running=True)
    assert decision.outcome == "training-running" and store.list(TRIGGERS) == []


def test_the_html_report_escapes_its_text_and_draws_each_drifted_feature(settings):
    import base64
    import re

    from mlcycle.tasks.drift import assess_drift
    from mlcycle.tasks.monitor.report import render_html
    from mlcycle.tasks.profile import build_profile
    from mlcycle.tasks.records.monitoring import TriggerDecision
    from mlcycle.tasks.simulator import simulate_batch

    spec = settings.dataset
    reference = simulate_batch(dt.date(2026, 10, 1), settings.simulator, spec, rows=4000).frame
    profile = build_profile(reference, spec.features, reference[spec.target].to_numpy(), np.linspace(0, 1, 500),
                            dataset=spec.name, dataset_schema_hash=spec.schema_hash(), n_bins=10,
                            created_at=T0, sample_size=settings.drift.reference_sample_size)
    current = simulate_batch(dt.date(2026, 10, 23), settings.simulator, spec, rows=3000).frame  # debt_ratio shifted
    current.loc[: len(current) // 2, "region"] = "north"
    decision = assess_drift(profile, current, spec, settings.drift, prediction_column=None)
    drifted = decision.drifted_features
    assert "debt_ratio" in drifted and "region" in drifted
    window = MonitorWindow(model="m<1>", champion_version=1, start=T0 - dt.timedelta(hours=24), end=T0)
    report = MonitorReport(window_id=window.window_id, window=window, rows=len(current), drift=decision,
                           performance=None, reasons=decision.reasons,
                           trigger=TriggerDecision(retrain_warranted=True, outcome="cooldown",
                                                   detail="<script>alert(1)</script> & more"))

    page = render_html(report, profile, current, {"alpha": settings.drift.alpha})
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "Drift report: m&lt;1&gt; v1" in page
    assert page.count('<tr class="drift">') == len(drifted)
    assert page.count("<tr") == 1 + len(decision.features)  # the header and one row per feature
    pictures = re.findall(r'<h3>([^<]+)</h3><img alt="[^"]+" src="data:image/png;base64,([^"]+)"/>', page)
    assert [name for name, _ in pictures] == drifted
    assert all(base64.b64decode(png).startswith(b"\x89PNG") for _, png in pictures)


def test_a_report_without_drift_says_so_and_draws_nothing():
    from mlcycle.tasks.monitor.report import render_html

    window = MonitorWindow(model="m", champion_version=1, start=T0 - dt.timedelta(hours=24), end=T0)
    report = MonitorReport(window_id=window.window_id, window=window, rows=0, performance=None,
                           drift=DriftDecision(enough_data=False, rows=0, min_rows=500))
    page = render_html(report, None, None, {})
    assert "<p>none</p>" in page and "not evaluated" in page and "no data" in page and "<img" not in page
