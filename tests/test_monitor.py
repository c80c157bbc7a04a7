"""Monitoring logic without Prefect: windows and their ids, the live-performance check per task, the drift
verdict in words, the trigger ledger's rules and the HTML report."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.monitor.performance import check_performance
from mlcycle.tasks.monitor.trigger import TRIGGERS, claim_trigger, update_trigger
from mlcycle.tasks.monitor.window import window_for
from mlcycle.tasks.records.monitoring import DriftDecision, MonitorReport, MonitorWindow, TriggerRecord
from tests.support.concurrency import at_once

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
    window = MonitorWindow(model="m", version=1, start=T0 - dt.timedelta(hours=24), end=T0)
    decision = DriftDecision(enough_data=True, rows=1000, min_rows=500, dataset_drift=drift,
                             reasons=["critical feature(s) drifted: debt_ratio"] if drift else [])
    return MonitorReport(window_id=window_id, window=window, rows=1000, drift=decision, performance=None,
                         reasons=list(decision.reasons))


def test_ledger_allows_one_trigger_per_window_and_honours_the_cooldown(store):
    first = claim_trigger(store, _report("w1"), T0, cooldown_hours=24)
    assert first.triggered and first.record.seq == 1
    update_trigger(store, first.record.model_copy(update={"status": "started", "training_flow_run_id": "r1"}))
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


def test_a_claim_whose_monitor_vanished_frees_its_window_once_expired(store):
    """A monitor killed between claiming a trigger and starting the training: its claim blocks the window (and
    the cooldown) only until it expires; then exactly one of the monitors that see it takes the window."""
    killed = claim_trigger(store, _report("w1"), T0, cooldown_hours=24, claim_seconds=600)
    assert killed.triggered and killed.record.claim_expires_at == T0 + dt.timedelta(seconds=600)
    before = claim_trigger(store, _report("w1"), T0 + dt.timedelta(seconds=599), 24, claim_seconds=600)
    assert before.outcome == "already-triggered" and before.record.seq == 1
    after = T0 + dt.timedelta(seconds=601)
    outcomes, _ = at_once(6, lambda _: claim_trigger(store, _report("w1"), after, 24, claim_seconds=600))
    assert sorted(d.outcome for d in outcomes) == ["already-triggered"] * 5 + ["triggered"]
    ledger = [TriggerRecord.model_validate_json(store.get_bytes(k)) for k in store.list(TRIGGERS)]
    assert [(r.seq, r.status) for r in ledger] == [(1, "expired"), (2, "claimed")]


def test_a_claimant_whose_claim_expired_cannot_record_over_its_successor(store):
    from mlcycle.tasks.monitor.trigger import set_claim_status

    slow = claim_trigger(store, _report("w1"), T0, cooldown_hours=0, claim_seconds=60)
    successor = claim_trigger(store, _report("w1"), T0 + dt.timedelta(minutes=5), 0, claim_seconds=60)
    assert successor.record.seq == 2
    assert set_claim_status(store, slow.record, "started", T0 + dt.timedelta(minutes=6)) is None
    ledger = [TriggerRecord.model_validate_json(store.get_bytes(k)) for k in store.list(TRIGGERS)]
    assert [(r.seq, r.status) for r in ledger] == [(1, "expired"), (2, "claimed")]


def test_status_reads_the_latest_decision_from_one_pointer_that_an_older_window_never_moves_back(store):
    from mlcycle.tasks.monitor.trigger import LATEST_DECISION, last_decision, save_decision

    def at(hours: int, window_id: str) -> MonitorReport:
        report = _report(window_id)
        end = T0 + dt.timedelta(hours=hours)
        report.window = report.window.model_copy(update={"start": end - dt.timedelta(hours=24), "end": end})
        return report

    assert last_decision(store) is None
    for hours, window_id in ((1, "w1"), (3, "w3"), (2, "w2")):  # w2 is a late re-run of an older window
        save_decision(store, at(hours, window_id))
    assert last_decision(store).window_id == "w3"
    store.delete("monitoring/decisions/w1.json")  # the pointer alone answers: no listing of the history
    assert MonitorReport.model_validate_json(store.get_bytes(LATEST_DECISION)).window_id == "w3"


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
    window = MonitorWindow(model="m<1>", version=1, start=T0 - dt.timedelta(hours=24), end=T0)
    report = MonitorReport(window_id=window.window_id, window=window, rows=len(current), drift=decision,
                           performance=None, reasons=decision.reasons,
                           trigger=TriggerDecision(retrain_warranted=True, outcome="cooldown",
                                                   detail="<script>alert(1)</script> & more"))

    page = render_html(report, profile, {"alpha": settings.drift.alpha})
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "Drift report: m&lt;1&gt; v1" in page
    assert page.count('<tr class="drift">') == len(drifted)
    assert page.count("<tr") == 1 + len(decision.features)  # the header and one row per feature
    pictures = re.findall(r'<h3>([^<]+)</h3><img alt="[^"]+" src="data:image/png;base64,([^"]+)"/>', page)
    assert [name for name, _ in pictures] == drifted
    assert all(base64.b64decode(png).startswith(b"\x89PNG") for _, png in pictures)


def test_a_report_without_drift_says_so_and_draws_nothing():
    from mlcycle.tasks.monitor.report import render_html

    window = MonitorWindow(model="m", version=1, start=T0 - dt.timedelta(hours=24), end=T0)
    report = MonitorReport(window_id=window.window_id, window=window, rows=0, performance=None,
                           drift=DriftDecision(enough_data=False, rows=0, min_rows=500))
    page = render_html(report, None, {})
    assert "<p>none</p>" in page and "not evaluated" in page and "no data" in page and "<img" not in page


# --------------------------------------------------------------------------------------------------
# window ids
# --------------------------------------------------------------------------------------------------


def test_windows_seconds_apart_get_different_ids_and_the_same_window_keeps_its_id():
    end = dt.datetime(2026, 10, 23, 5, 0, 0, tzinfo=dt.UTC)
    a = window_for("m", 3, 1, start=end - dt.timedelta(hours=1), end=end)
    b = window_for("m", 3, 1, start=end - dt.timedelta(hours=1, seconds=7), end=end)
    c = window_for("m", 3, 1, start=end - dt.timedelta(hours=1), end=end + dt.timedelta(microseconds=400))
    assert len({a.window_id, b.window_id, c.window_id}) == 3
    same = window_for("m", 3, 1, start=(end - dt.timedelta(hours=1)).astimezone(dt.timezone(dt.timedelta(hours=2))),
                      end=end)
    assert same.window_id == a.window_id == window_for("m", 3, 1, start=end - dt.timedelta(hours=1), end=end).window_id
    assert a.window_id.startswith("m-v3-20261023T040000-20261023T050000-")


# --------------------------------------------------------------------------------------------------
# live performance per task, on real tables (tests/support/datasets.py)
# --------------------------------------------------------------------------------------------------


def _spec(table, **declared):
    from mlcycle.tasks.settings import DatasetSpec, FeatureSpec

    features = [FeatureSpec(name=c, kind="numeric") for c in table.features]
    return DatasetSpec(name=table.name, task=table.task, id_column="row_id", timestamp_column="ts",
                       target=table.target, features=features, **declared)


def _monitor(metric: str, min_labelled_rows: int = 50):
    from mlcycle.tasks.settings import MonitorSettings

    return MonitorSettings(performance_metric=metric, performance_tolerance=0.05, min_labelled_rows=min_labelled_rows)


@pytest.fixture(scope="module")
def multiclass_window():
    """anes96's party identification (7 classes): a model fitted on one half, its logged outputs on the other."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tests.support.datasets import anes96

    table = anes96()
    spec = _spec(table, classes=list(range(7)))
    frame = table.frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    fit, live = frame.iloc[:472], frame.iloc[472:].reset_index(drop=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(fit[table.features], fit[table.target].astype(str))
    p = model.predict_proba(live[table.features])[:, [list(model.classes_).index(c) for c in spec.class_labels]]
    rows = pd.DataFrame({table.target: live[table.target], "label": np.asarray(spec.class_labels)[p.argmax(1)],
                         "probability": p.max(1), "probabilities": list(p)})
    return spec, rows


@pytest.mark.parametrize("metric", ["log_loss", "balanced_accuracy", "f1_macro", "roc_auc_ovr", "accuracy"])
def test_multiclass_live_metric_degrades_in_its_own_direction(multiclass_window, metric):
    spec, rows = multiclass_window
    healthy = check_performance(rows, spec, {metric: None}, _monitor(metric))
    same = check_performance(rows, spec, {metric: healthy.live_value}, _monitor(metric))
    assert not same.degraded and same.worse_by == 0 and "within the tolerance" in same.detail
    noise = rows.copy()
    noise["probabilities"] = list(np.random.default_rng(1).dirichlet(np.ones(7), len(rows)))
    noise["label"] = np.asarray(spec.class_labels)[np.argmax(np.stack(noise["probabilities"]), 1)]
    broken = check_performance(noise, spec, {metric: healthy.live_value}, _monitor(metric))
    assert broken.task == "multiclass" and broken.degraded and broken.worse_by > 0.05
    lower = metric == "log_loss"
    assert broken.higher_is_better is not lower
    assert (broken.live_value > healthy.live_value) if lower else (broken.live_value < healthy.live_value)
    assert ("rise of" if lower else "drop of") in broken.detail and "beyond the tolerance" in broken.detail


def test_multiclass_labels_outside_the_classes_or_a_single_class_decide_nothing(multiclass_window):
    spec, rows = multiclass_window
    one = rows[rows[spec.target] == rows[spec.target].mode()[0]]
    check = check_performance(one, spec, {"roc_auc_ovr": 0.7}, _monitor("roc_auc_ovr", 10))
    assert check.live_value is None and not check.degraded and "single class" in check.detail
    stray = rows.assign(**{spec.target: rows[spec.target].where(rows.index > 5, 9)})
    check = check_performance(stray, spec, {"log_loss": 1.5}, _monitor("log_loss"))
    assert not check.degraded and "['9'] that are not among the declared classes" in check.detail


@pytest.fixture(scope="module")
def regression_window():
    """randhie's outpatient visits: a ridge fitted on 4,000 person-years, logged predictions for 2,000 more."""
    from sklearn.linear_model import Ridge

    from tests.support.datasets import randhie

    table = randhie()
    spec = _spec(table)
    frame = table.frame.sample(n=6000, random_state=0).reset_index(drop=True)
    fit, live = frame.iloc[:4000], frame.iloc[4000:].reset_index(drop=True)
    model = Ridge().fit(fit[table.features], fit[table.target])
    return spec, pd.DataFrame({table.target: live[table.target], "prediction": model.predict(live[table.features])})


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_regression_live_metric_rises_or_drops_beyond_tolerance(regression_window, metric):
    spec, rows = regression_window
    healthy = check_performance(rows, spec, {metric: None}, _monitor(metric))
    assert healthy.task == "regression" and healthy.live_value is not None
    good = check_performance(rows, spec, {metric: healthy.live_value + (0.01 if metric == "r2" else -0.01)},
                             _monitor(metric))
    assert not good.degraded
    off = rows.assign(prediction=rows["prediction"] + np.random.default_rng(0).normal(0, 3, len(rows)))
    worse = check_performance(off, spec, {metric: healthy.live_value}, _monitor(metric))
    assert worse.degraded and worse.higher_is_better is (metric == "r2")
    assert ("drop of" if metric == "r2" else "rise of") in worse.detail


def test_regression_r2_on_a_constant_target_is_undefined(regression_window):
    spec, rows = regression_window
    flat = rows.assign(**{spec.target: 2})
    check = check_performance(flat, spec, {"r2": 0.1}, _monitor("r2"))
    assert check.live_value is None and not check.degraded and "r2 undefined" in check.detail
    assert "constant target" in check.detail
    assert check_performance(flat, spec, {"rmse": 1.0}, _monitor("rmse")).live_value is not None


def test_binary_labels_as_declared_classes_single_class_and_no_labels(settings):
    """fair's affairs (binary): labels given as the declared classes ("no"/"yes"), then degenerate windows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tests.support.datasets import fair

    table = fair()
    features = table.features
    spec = _spec(table, classes=["no", "yes"], positive_label="yes")
    frame = table.frame.sample(n=3000, random_state=0).reset_index(drop=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(frame[features][:1500], frame[table.target][:1500])
    live = frame.iloc[1500:].reset_index(drop=True)
    p = model.predict_proba(live[features])[:, 1]
    rows = pd.DataFrame({table.target: np.where(live[table.target] == 1, "yes", "no"), "probability": p,
                         "label": (p >= 0.5).astype(int)})
    for metric in ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "recall", "precision"):
        check = check_performance(rows, spec, {metric: 0.5}, _monitor(metric))
        assert check.live_value is not None, (metric, check.detail)
    auc = check_performance(rows, spec, {"roc_auc": 0.95}, _monitor("roc_auc"))
    assert auc.degraded and 0.6 < auc.live_value < 0.9
    loss = check_performance(rows, spec, {"log_loss": 0.30}, _monitor("log_loss"))
    assert loss.degraded and not loss.higher_is_better and "rise of" in loss.detail

    ones = rows[rows[table.target] == "yes"]
    single = check_performance(ones, spec, {"roc_auc": 0.8}, _monitor("roc_auc"))
    assert single.live_value is None and "single class" in single.detail and not single.degraded
    unlabelled = rows.assign(**{table.target: None})
    empty = check_performance(unlabelled, spec, {"roc_auc": 0.8}, _monitor("roc_auc"))
    assert empty.labelled_rows == 0 and "not enough labels: 0 labelled rows" in empty.detail
    assert check_performance(rows.iloc[:0], spec, {"roc_auc": 0.8}, _monitor("roc_auc")).labelled_rows == 0


# --------------------------------------------------------------------------------------------------
# the dataset-level verdict, in words
# --------------------------------------------------------------------------------------------------


def _feature(name: str, drifted: bool, critical: bool = False):
    from mlcycle.tasks.records.monitoring import FeatureDrift

    return FeatureDrift(feature=name, kind="numeric", critical=critical, n_reference=5000, n_current=2000,
                        test="ks", p_value=1e-12 if drifted else 0.8, psi=0.6 if drifted else 0.01,
                        wasserstein_norm=0.5 if drifted else 0.01, null_p_value=1.0)


def test_the_verdict_says_why_in_words(settings):
    from mlcycle.tasks.drift import decide_drift

    settings = settings.model_copy(update={"drift": settings.drift.model_copy(update={"rule": "share"})})
    calm = decide_drift([_feature(f"f{i}", i < 2, critical=i == 9) for i in range(10)], None, 2000, settings.drift)
    assert calm.verdict == ("2 of 10 features drifted (20%), below the 50% share, and no critical feature "
                            "drifted: no dataset drift")
    assert not calm.dataset_drift
    many = decide_drift([_feature(f"f{i}", i < 5) for i in range(10)], None, 2000, settings.drift)
    assert many.dataset_drift and many.verdict == ("5 of 10 features drifted (50%), at or above the 50% share, "
                                                   "and no feature is declared critical: dataset drift")
    critical = decide_drift([_feature("a", True, critical=True), *(_feature(f"f{i}", False) for i in range(9))],
                            None, 2000, settings.drift)
    assert critical.dataset_drift and critical.verdict.startswith("1 of 10 features drifted (10%), below the 50% "
                                                                  "share, and critical feature a drifted")
    thin = decide_drift([], None, 10, settings.drift)
    assert "no verdict" in thin.verdict and "fewer than the 500 needed" in thin.verdict


def test_each_report_states_the_verdict(settings):
    from mlcycle.tasks.drift import decide_drift
    from mlcycle.tasks.monitor.report import render_html, render_markdown

    decision = decide_drift([_feature(f"f{i}", False) for i in range(10)], None, 2000, settings.drift)
    assert decision.verdict.startswith("0 of 10 features drifted (0%), below the 50% share")
    window = MonitorWindow(model="m", version=1, start=T0 - dt.timedelta(hours=24), end=T0)
    report = MonitorReport(window_id=window.window_id, window=window, rows=2000, drift=decision, performance=None)
    assert f"**Why:** {decision.verdict}" in render_markdown(report, None, {})
    assert f"<b>Why:</b> {decision.verdict}" in render_html(report, None, {})
    assert MonitorReport.model_validate_json(report.model_dump_json()).drift.verdict == decision.verdict


def test_every_drift_and_monitor_threshold_is_in_the_project_file_with_a_comment():
    import re
    from pathlib import Path

    from mlcycle.tasks.settings.monitoring import DriftSettings
    from mlcycle.tasks.settings.sections import MonitorSettings

    text = (Path(__file__).resolve().parents[1] / "mlcycle.yaml").read_text()
    for section, model in (("drift", DriftSettings), ("monitor", MonitorSettings)):
        body = re.search(rf"^{section}:\n((?:[ #].*\n|\n)*?)(?=^\S|\Z)", text, flags=re.M).group(1)
        for field, info in model.model_fields.items():
            nested = getattr(info.annotation, "model_fields", None)
            if nested is None:
                assert re.search(rf"^  {field}: \S.*#\s*\S", body, flags=re.M), f"{section}.{field} undeclared or bare"
                continue
            block = re.search(rf"^  {field}:.*\n((?:    .*\n)+)", body, flags=re.M)
            assert block, f"{section}.{field} undeclared"
            for sub in nested:
                assert re.search(rf"^    {sub}: \S.*#\s*\S", block.group(1), flags=re.M), \
                    f"{section}.{field}.{sub} undeclared or bare"
    assert "drift_share" in text and "critical: true" in text  # the dataset-level rule, in the file
