"""The rollout flow on real Prefect (package chained before it) and ``mlcycle rollout`` / ``deployments``.

The tests share one home; each brings it to the state it starts from (:func:`serving_v1`), so any one
passes alone and in any order.
"""

from __future__ import annotations

import json

import pytest

from tests.support.endpoint import NEEDS_NGINX
from tests.support.env import free_port
from tests.support.rollout import clone_home, predict

pytestmark = [pytest.mark.flow, NEEDS_NGINX]


@pytest.fixture(scope="module")
def flow_home(rollout_models, tmp_path_factory):
    models = rollout_models
    settings = clone_home(models, tmp_path_factory.mktemp("flow") / "home")
    yield models, settings
    from mlcycle.tasks.rollout.orchestrate import teardown

    teardown(settings)


@pytest.fixture
def flow_env(flow_home, monkeypatch, prefect_harness):
    """get_settings() (flows, CLI) on the cloned home, the process target and its endpoint port."""
    from mlcycle.tasks.settings import get_settings

    models, settings = flow_home
    monkeypatch.setenv("MLCYCLE_HOME", str(settings.home))
    env = {"SERVING__CANARY_ROWS": 120, "SERVING__LATENCY_REQUESTS": 20, "ROLLOUT__TARGET": "process",
           "ROLLOUT__ENDPOINT_PORT": settings.rollout.endpoint_port, "ROLLOUT__DRAIN_SECONDS": 15,
           "TRAINING__MODEL_NAME": settings.training.model_name}
    for key, value in env.items():
        monkeypatch.setenv(f"MLCYCLE_{key}", str(value))
    get_settings.cache_clear()
    yield models, get_settings()
    get_settings.cache_clear()


def serving_v1(models, settings):
    """v1 live on the flow home (rolled out if something else, or nothing, is): the deployment record."""
    from mlcycle.tasks.rollout.orchestrate import read_current, rollout
    from mlcycle.tasks.storage import open_store

    store = open_store(settings)
    current = read_current(store)
    if current is not None and current.model_version == "1":
        return current
    return rollout(settings, store, bento_tag=models.v1.tag, target="process")


def test_the_flow_packages_the_champion_then_rolls_it_out(flow_env):
    """... and the canaries of test-serving and of the rollout are logged as canary traffic, which a monitoring
    window over the same period does not count: it counts exactly the live requests sent after the switch."""
    import datetime as dt
    import time

    from mlcycle.flows.rollout import rollout_flow
    from mlcycle.tasks.inference_reader import read_inference_log
    from mlcycle.tasks.monitor.window import summarize_window, window_columns, window_for
    from mlcycle.tasks.registry.versions import load_metadata
    from mlcycle.tasks.rollout.orchestrate import read_current
    from mlcycle.tasks.storage import open_store

    models, settings = flow_env
    store = open_store(settings)
    began = dt.datetime.now(dt.UTC)
    record = rollout_flow()  # no bento: the package flow runs first (test-serving), then the rollout
    assert record.status == "live" and record.model_version == "1" and record.bento_tag == models.v1.tag
    assert record.flow_run_id and read_current(store).flow_run_id == record.flow_run_id
    live_ids = set()
    for _ in range(3):
        answer = predict(record.endpoint_url, models.request)
        assert answer["model_version"] == 1
        live_ids.add(answer["request_id"])

    cfg = settings.serving
    canaries = 2 * (cfg.canary_rows * 2 + cfg.latency_requests + 3)  # test-serving's, then the candidate's
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the live backend writes its log every few seconds
        logged = read_inference_log(store, traffic=None)
        logged = logged[logged["ts"] >= began]
        if live_ids <= set(logged["request_id"]) and (logged["traffic"] == "canary").sum() >= canaries:
            break
        time.sleep(0.5)
    assert (logged["traffic"] == "canary").sum() == canaries
    assert set(logged.loc[logged["request_id"].isin(live_ids), "traffic"]) == {"live"}
    live_rows = 3 * len(models.request["records"])
    champion = load_metadata(store, record.model_name, 1)
    window = window_for(record.model_name, 1, 1, end=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1),
                        start=began)
    summary = summarize_window(store, window, champion.metrics.model_dump(), settings.dataset, settings.monitor)
    assert summary.rows == live_rows
    feature = settings.dataset.feature_names[0]
    assert len(window_columns(store, window, [feature])) == live_rows  # what one feature's drift task reads


def test_a_failed_rollout_fails_the_flow_run_and_v1_keeps_serving(flow_env):
    from mlcycle.flows.rollout import rollout_flow
    from mlcycle.tasks.rollout.orchestrate import RolloutFailed, history
    from mlcycle.tasks.storage import open_store

    models, settings = flow_env
    serving_v1(models, settings)
    with pytest.raises(RolloutFailed, match="failed at ready"):
        rollout_flow(bento_tag=models.broken)
    failed = history(open_store(settings), limit=1)[0]
    assert failed.status == "failed" and failed.flow_run_id
    assert predict(failed.endpoint_url, models.request)["model_version"] == 1


def test_cli_rollout_rollback_and_deployment_records(flow_env, monkeypatch, capsys):
    from tests.support.env import run_cli

    models, settings = flow_env
    serving_v1(models, settings)
    code, _, err = run_cli(monkeypatch, capsys, "rollout", "--bento", models.broken)
    assert code == 1 and "failed at ready" in err
    code, out, err = run_cli(monkeypatch, capsys, "rollout", "--bento", models.v2.tag, "--json")
    assert code == 0, err
    v2 = json.loads(out)
    assert v2["status"] == "live" and v2["model_version"] == "2"

    code, out, err = run_cli(monkeypatch, capsys, "deployments", "current", "--json")
    current = json.loads(out)
    assert code == 0 and current["deployment"]["id"] == v2["id"]
    assert current["endpoint_url"] == f"http://127.0.0.1:{settings.rollout.endpoint_port}"
    assert current["endpoint_running"] and current["backend_alive"] and current["endpoint_serves"] == v2["id"]

    code, out, err = run_cli(monkeypatch, capsys, "rollout", "--rollback", "--json")
    assert code == 0, err
    back = json.loads(out)
    assert back["kind"] == "rollback" and back["model_version"] == "1" and back["rollback_of"] == v2["id"]

    code, out, _ = run_cli(monkeypatch, capsys, "deployments", "list", "--json")
    listed = json.loads(out)
    assert [d["id"] for d in listed[:2]] == [back["id"], v2["id"]]
    assert [d["status"] for d in listed[:3]] == ["live", "retired", "failed"]

    code, out, _ = run_cli(monkeypatch, capsys, "deployments", "list")
    assert code == 0 and "FAILED at ready" in out and back["id"] in out


@pytest.mark.parametrize("args, fragment", [
    (["rollout", "--target", "k8s"], "--target must be 'docker' or 'process'"),
    (["rollout", "--rollback", "--version", "2"], "--rollback takes no"),
    (["rollout", "--version", "two"], "--version must be a version number"),
    (["rollout", "--image", "x:y", "--target", "process"], "--image needs --target docker"),
    (["rollout", "--bento", "a:b", "--version", "1"], "at most one of"),
])
def test_cli_rollout_usage_errors_exit_2(flow_env, monkeypatch, capsys, args, fragment):
    from tests.support.env import run_cli

    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_cli_failed_rollout_exits_1_with_one_line(flow_env, monkeypatch, capsys):
    from tests.support.env import run_cli

    models, _ = flow_env
    code, _, err = run_cli(monkeypatch, capsys, "rollout", "--bento", "mlcycle-model:v9-nothere")
    assert code == 1 and "is not in the BentoML store" in err and len(err.strip().splitlines()) == 1


def test_an_unused_port_is_what_current_reports_before_any_rollout(tmp_path, monkeypatch, capsys, env_settings):
    from tests.support.env import run_cli

    port = free_port()
    env_settings(rollout__endpoint_port=str(port))
    code, out, _ = run_cli(monkeypatch, capsys, "deployments", "current", "--json")
    status = json.loads(out)
    assert code == 0 and status["deployment"] is None and status["endpoint_url"] == f"http://127.0.0.1:{port}"
    assert status["endpoint_running"] is False


def _live_rows_logged(store, ids: set[str], since, timeout: float = 60.0) -> None:
    """Wait until the live backend has written the rows of requests ``ids`` (it flushes every few seconds)."""
    import time

    from mlcycle.tasks.inference_reader import read_inference_log

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logged = read_inference_log(store, traffic=None)
        if ids <= set(logged.loc[logged["ts"] >= since, "request_id"]):
            return
        time.sleep(0.5)
    raise AssertionError(f"the requests {sorted(ids)[:3]}... were not logged within {timeout:.0f}s")


def _monitor_since(began):
    """The monitor flow (real Prefect) over ``[began, now + 1 min)``."""
    import datetime as dt

    from mlcycle.flows.monitor import monitor_flow

    end = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    return monitor_flow(start=began.isoformat(), end=end.isoformat())


def test_the_monitor_judges_the_version_that_serves_not_the_champion(flow_env):
    """v2 rolled out by hand while v1 stays champion, then a rollback, then v2 promoted but its rollout
    failing: each time the window holds the traffic of the version behind the endpoint, judged against that
    version's own reference, and the report says which deployment it came from."""
    import datetime as dt

    from mlcycle.tasks.registry.aliases import promote
    from mlcycle.tasks.registry.versions import read_alias
    from mlcycle.tasks.rollout.orchestrate import RolloutFailed, read_current, rollback, rollout
    from mlcycle.tasks.storage import open_store

    models, settings = flow_env
    store = open_store(settings)
    serving_v1(models, settings)
    per_request = len(models.request["records"])

    def traffic_since(began, expected_version: int, requests: int = 3) -> None:
        ids = set()
        for _ in range(requests):
            answer = predict(read_current(store).endpoint_url, models.request)
            assert answer["model_version"] == expected_version
            ids.add(answer["request_id"])
        _live_rows_logged(store, ids, began)

    # 1. a version that is not the champion serves: its traffic is judged, not filtered out as "no data"
    v2 = rollout(settings, store, bento_tag=models.v2.tag, target="process")
    assert read_alias(store, v2.model_name).version == 1
    began = dt.datetime.now(dt.UTC)
    traffic_since(began, 2)
    report = _monitor_since(began)
    assert report.window.version == 2 and report.rows == 3 * per_request
    assert f"live deployment {v2.id}" in report.window.served_by and "champion v1" in report.window.served_by

    # 2. after a rollback, the version rolled back to
    back = rollback(settings, store)
    began = dt.datetime.now(dt.UTC)
    traffic_since(began, 1)
    report = _monitor_since(began)
    assert report.window.version == 1 and report.rows == 3 * per_request
    assert f"live deployment {back.id}" in report.window.served_by

    # 3. v2 becomes champion but its rollout fails: v1 keeps serving, and v1 is what the monitor judges
    promote(store, v2.model_name, 2, reason="monitor test: a champion whose rollout fails")
    try:
        with pytest.raises(RolloutFailed):
            rollout(settings, store, bento_tag=models.broken, target="process")
        began = dt.datetime.now(dt.UTC)
        traffic_since(began, 1)
        report = _monitor_since(began)
        assert report.window.version == 1 and report.rows == 3 * per_request
        assert "champion v2" in report.window.served_by
    finally:
        promote(store, v2.model_name, 1, reason="monitor test: the home's champion again")
