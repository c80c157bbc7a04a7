"""The monitor flow end to end on real Prefect: no trigger before the drift date, exactly one training
run after it (a flow run of the train deployment), none in the cooldown or on a repeated window, and
at most one under concurrent monitors."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from mlcycle.tasks.monitor.trigger import claim_trigger
from mlcycle.tasks.records.monitoring import DriftDecision, MonitorReport, MonitorWindow
from mlcycle.tasks.storage import open_store
from tests.support.env import run_cli, settings_env

pytestmark = pytest.mark.flow

DRIFT_DATE = dt.date(2026, 10, 22)  # mlcycle.yaml: debt_ratio (critical) shifts 0.8 sd from this date


@pytest.fixture(scope="module")
def world(prefect_harness, tmp_path_factory):
    """A champion trained on Oct 2-13, then logged traffic for Oct 14-24 (drift from Oct 22)."""

    from mlcycle.flows.train import train_flow
    from mlcycle.tasks.ingest import publish, validate_raw, write_raw
    from mlcycle.tasks.registry.versions import load_model, model_name
    from mlcycle.tasks.simulator import simulate_batch
    from mlcycle.tasks.traffic import log_in_process

    home = tmp_path_factory.mktemp("monitor") / "home"
    env = {"MLCYCLE_HOME": str(home), "MLCYCLE_SIMULATOR__ROWS_PER_DAY": "800",
           "MLCYCLE_TRAINING__N_ITER": "2", "MLCYCLE_MONITOR__COOLDOWN_HOURS": "24",
           # a train deployment and a model name of its own: other modules on the shared Prefect harness
           # trigger theirs, and Prefect dedupes runs of one flow by the idempotency key retrain-<window>,
           # which names the model and the window
           "MLCYCLE_MONITOR__TRAIN_DEPLOYMENT": "train/monitor-flow-tests",
           "MLCYCLE_TRAINING__MODEL_NAME": "loans-monitor-flow"}
    with settings_env(env) as settings:
        store = open_store(settings)
        for i in range(12):
            day = dt.date(2026, 10, 2) + dt.timedelta(days=i)
            raw = write_raw(store, settings, day, simulate_batch(day, settings.simulator, settings.dataset))
            publish(store, validate_raw(store, settings, raw.ref()))
        outcome = train_flow(days=10)
        assert outcome.promoted, outcome
        champion = load_model(store, model_name(settings), "champion")
        days = [dt.date(2026, 10, 14) + dt.timedelta(days=i) for i in range(11)]
        log_in_process(store, settings, champion, days, rows_per_day=1500, spill_dir=home / "spill")
        deployment_id = _deploy_train(settings)
        yield settings, store, deployment_id


def _deploy_train(settings) -> str:
    """The train deployment on the harness's API (no worker: a triggered run stays Scheduled)."""
    from mlcycle.flows.train import train_flow

    flow_name, deployment_name = settings.monitor.train_deployment.split("/")
    assert flow_name == train_flow.name
    return str(train_flow.to_deployment(name=deployment_name).apply())


def _train_runs(deployment_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def _end(day: dt.date) -> str:
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).isoformat()


def test_monitor_before_the_drift_date_does_not_trigger(world):
    from mlcycle.flows.monitor import monitor_flow

    settings, store, deployment_id = world
    earlier = _train_runs(deployment_id)  # tests run in random order: the drifted window's may have run first
    report = monitor_flow(hours=24, end=_end(DRIFT_DATE - dt.timedelta(days=2)))
    assert report.drift.enough_data and not report.drift.dataset_drift, report.drift.reasons
    assert report.trigger.outcome == "not-warranted"
    assert _train_runs(deployment_id) == earlier
    assert store.exists(report.report_key)
    assert store.exists(f"monitoring/decisions/{report.window_id}.json")


def test_after_the_drift_date_exactly_one_training_starts_and_the_cooldown_holds(world):
    from mlcycle.flows.monitor import monitor_flow

    settings, store, deployment_id = world
    report = monitor_flow(hours=24, end=_end(DRIFT_DATE + dt.timedelta(days=1)))
    assert report.drift.dataset_drift
    assert "debt_ratio" in report.drift.drifted_features
    assert report.trigger.outcome == "triggered" and report.trigger.triggered
    runs = _train_runs(deployment_id)
    assert len(runs) == 1
    assert report.reasons[0] == "critical feature(s) drifted: debt_ratio"
    assert runs[0].parameters["reason"] == "; ".join(report.reasons)  # the training run says why it was started
    assert str(runs[0].id) == report.trigger.record.training_flow_run_id

    again = monitor_flow(hours=24, end=_end(DRIFT_DATE + dt.timedelta(days=1)))
    assert again.trigger.outcome == "already-triggered"
    later = monitor_flow(hours=24, end=_end(DRIFT_DATE + dt.timedelta(days=2)))
    assert later.drift.dataset_drift and later.trigger.outcome == "cooldown"  # the first trigger was seconds ago
    assert len(_train_runs(deployment_id)) == 1
    html_report = store.get_bytes(report.report_key).decode()
    assert "debt_ratio" in html_report and "data:image/png;base64," in html_report


def test_concurrent_monitors_over_one_window_trigger_at_most_once(store):
    """Race the plain trigger claim from several threads on a fresh ledger (its own store, each backend).

    Its own ledger, not the world's: the tests above trigger at the wall clock's time, and a fixed ``now``
    measured against that would fall into their cooldown once the calendar passes it.
    """
    window = MonitorWindow(model="race", version=1, start=dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
                           end=dt.datetime(2027, 1, 2, tzinfo=dt.UTC))
    report = MonitorReport(window_id=window.window_id, window=window, rows=1000,
                           drift=DriftDecision(enough_data=True, rows=1000, min_rows=500, dataset_drift=True,
                                               reasons=["test"]), performance=None, reasons=["test"])
    now = dt.datetime(2027, 1, 3, tzinfo=dt.UTC)
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait()
        outcomes.append(claim_trigger(store, report, now, cooldown_hours=24).outcome)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("triggered") == 1
    assert set(outcomes) <= {"triggered", "already-triggered"}


@pytest.fixture
def without_train_deployment(world, monkeypatch):
    """The world's settings, but a train deployment that does not exist on the server (as without `mlcycle up`)."""
    from mlcycle.tasks.settings import get_settings

    monkeypatch.setenv("MLCYCLE_MONITOR__TRAIN_DEPLOYMENT", "train/never-deployed")
    monkeypatch.setenv("MLCYCLE_MONITOR__COOLDOWN_HOURS", "0")  # the ledger's earlier triggers do not hold this back
    get_settings.cache_clear()
    yield world
    get_settings.cache_clear()


def test_drift_without_a_train_deployment_loses_nothing_and_exits_3(without_train_deployment, monkeypatch, capsys):
    """`mlcycle monitor` on a drifted window with no train deployment: the report and the decision are stored and
    printed (human and --json), the trigger says why in one sentence with the way out, the ledger slot is released,
    and the exit code is the README's (3)."""
    import json

    from mlcycle.tasks.monitor.trigger import trigger_records

    settings, store, _ = without_train_deployment
    start, end = "2026-10-23T12:00:00+00:00", "2026-10-24T12:00:00+00:00"  # a window no other test uses
    code, out, err = run_cli(monkeypatch, capsys, "monitor", "--start", start, "--end", end, "--json")
    assert code == 3, err
    report = json.loads(out)
    assert report["drift"]["dataset_drift"] and "debt_ratio" in report["drift"]["drifted_features"]
    assert report["drift"]["verdict"].endswith(": dataset drift")
    trigger = report["trigger"]
    assert trigger["outcome"] == "start-failed" and not trigger["triggered"] and trigger["record"]["status"] == "failed"
    assert "no deployment train/never-deployed" in trigger["detail"]
    assert "`mlcycle up`" in trigger["detail"] and "`mlcycle train`" in trigger["detail"]
    assert err.strip().splitlines() == [f"mlcycle: error: {trigger['detail']}"]
    stored = json.loads(store.get_bytes(f"monitoring/decisions/{report['window_id']}.json"))
    assert stored["trigger"]["outcome"] == "start-failed" and store.exists(report["report_key"])
    html = store.get_bytes(report["report_key"]).decode()
    from markupsafe import escape  # as the report template escapes

    assert "start-failed" in html and "mlcycle up" in html and str(escape(report["drift"]["verdict"])) in html

    code, out, err = run_cli(monkeypatch, capsys, "monitor", "--start", start, "--end", end)  # human, and again
    assert code == 3
    assert f"window {report['window_id']}:" in out and "trigger: start-failed: retraining is warranted" in out
    assert "why:   " in out and "mlcycle up" in err
    mine = [r for r in trigger_records(store) if r.window_id == report["window_id"]]
    assert [r.status for r in mine] == ["failed", "failed"]  # each failed start released its slot: a later run may try
