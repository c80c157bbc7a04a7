"""Rollout on the ``process`` target: blue/green behind the stable endpoint, failures, rollback, records.

The tests of one target share a home (tests/support/rollout.py: two real model versions and a broken
bento): v1 goes live, v2 replaces it under continuous traffic, a broken candidate fails, a latency budget
fails, rollback goes back and forth. Each test first brings the home to the state it starts from
(``scenario.serving``), so any one passes alone and in any order.
"""

from __future__ import annotations

import os

import pytest

from tests.support.endpoint import NEEDS_NGINX
from tests.support.rollout import Scenario, clone_home, predict, traffic

pytestmark = NEEDS_NGINX


@pytest.fixture(scope="module")
def scenario(rollout_models, tmp_path_factory):
    models = rollout_models
    s = Scenario(clone_home(models, tmp_path_factory.mktemp("process") / "home"), models, "process")
    yield s
    s.teardown()


# --------------------------------------------------------------------------------------------------
# the scenario
# --------------------------------------------------------------------------------------------------


def test_first_rollout_serves_v1_through_the_stable_url(scenario):
    from mlcycle.tasks.rollout.orchestrate import read_current

    before = scenario.current()  # nothing on a fresh home; else v2 first, so that v1 replaces something
    if before is not None and before.model_version == "1":
        before = scenario.serving("2")
    record = scenario.rollout(scenario.models.v1.tag)
    assert record.status == "live" and record.model_version == "1"
    assert record.previous_id == (before.id if before else None)
    assert record.canary.rows == 120 and record.canary.max_abs_diff <= 1e-9
    assert record.timings.start_to_ready_seconds > 0 and record.timings.switch_seconds is not None
    answer = predict(scenario.url, scenario.models.request)
    assert answer["model_version"] == 1 and answer["deployment"] == record.id
    assert read_current(scenario.store).id == record.id
    assert record.endpoint_url == scenario.url


def test_v2_replaces_v1_under_continuous_traffic_without_a_failed_request(scenario):
    from mlcycle.tasks import stack
    from mlcycle.tasks.rollout.orchestrate import find, history, read_current

    v1 = scenario.serving("1")
    record, client = scenario.roll_v2_under_traffic()
    assert len(client.versions) > 50
    assert record.status == "live" and record.model_version == "2" and record.previous_id == v1.id
    assert read_current(scenario.store).id == record.id
    retired = find(scenario.store, v1.id)
    assert retired.status == "retired" and retired.replaced_by == record.id and retired.ended_at
    assert not stack.pid_alive(v1.backend.pid)  # the old backend was stopped after the drain
    assert [r.id for r in history(scenario.store)][:2] == [record.id, v1.id]


def test_a_candidate_that_never_becomes_ready_leaves_v2_serving_and_is_recorded(scenario):
    from mlcycle.tasks import stack
    from mlcycle.tasks.rollout.orchestrate import RolloutFailed, history, read_current

    v2 = scenario.serving("2")
    with traffic(scenario.url, scenario.models.request) as client, pytest.raises(RolloutFailed) as failed:
        scenario.rollout(scenario.models.broken)
    assert client.failures == [] and set(client.versions) == {2}
    record = failed.value.record
    assert record.status == "failed" and record.failed_stage == "ready"
    assert "sha256" in record.reason and "keeps serving" in str(failed.value)
    assert read_current(scenario.store).id == v2.id
    assert history(scenario.store, limit=1)[0].id == record.id
    assert predict(scenario.url, scenario.models.request)["model_version"] == 2
    assert not any(s.name == f"serving-{record.id}" for s in stack.services(scenario.settings))


def test_a_candidate_over_the_latency_budget_is_refused(scenario):
    from mlcycle.tasks.rollout.orchestrate import RolloutFailed, read_current, rollout

    strict = scenario.settings.model_copy(update={"serving": scenario.settings.serving.model_copy(
        update={"latency_budget_ms": 0.01})})
    v2 = scenario.serving("2")
    with pytest.raises(RolloutFailed, match="over the budget") as failed:
        rollout(strict, scenario.store, bento_tag=scenario.models.v1.tag, target="process")
    assert failed.value.record.failed_stage == "canary"
    assert read_current(scenario.store).id == v2.id
    assert predict(scenario.url, scenario.models.request)["model_version"] == 2


def test_rollback_returns_to_v1_and_a_second_rollback_to_v2(scenario):
    from mlcycle.tasks.rollout.orchestrate import read_current, rollback

    v2 = scenario.serving("2")
    back = scenario.roll_back_under_traffic()
    assert back.kind == "rollback" and back.rollback_of == v2.id and back.model_version == "1"
    assert read_current(scenario.store).id == back.id
    forth = rollback(scenario.settings, scenario.store)
    assert forth.model_version == "2" and forth.rollback_of == back.id
    assert predict(scenario.url, scenario.models.request)["model_version"] == 2


def test_current_status_reports_the_stable_url_and_what_runs(scenario):
    from mlcycle.tasks.rollout.orchestrate import current_status

    live = scenario.serving("2")
    status = current_status(scenario.settings, scenario.store)
    assert status.endpoint_url == scenario.url and status.endpoint_running and status.backend_alive
    assert status.deployment.id == live.id and status.endpoint_serves == live.id


# --------------------------------------------------------------------------------------------------
# records and guards (no server)
# --------------------------------------------------------------------------------------------------


def test_rollback_with_nothing_before_names_the_problem(settings):
    from mlcycle.tasks.rollout.orchestrate import rollback
    from mlcycle.tasks.rollout.targets import RolloutError
    from mlcycle.tasks.storage import open_store

    with pytest.raises(RolloutError, match="nothing to roll back"):
        rollback(settings, open_store(settings))


def test_a_second_rollout_is_refused_while_one_holds_the_lease(settings):
    from mlcycle.tasks.rollout.orchestrate import deployment_lock
    from mlcycle.tasks.rollout.targets import RolloutError
    from mlcycle.tasks.storage import open_store

    store = open_store(settings)
    ttl = settings.rollout.lease_seconds
    with deployment_lock(store, "first", ttl_seconds=ttl), pytest.raises(RolloutError, match="'first'"), \
            deployment_lock(store, "second", ttl_seconds=ttl):
        pass
    with deployment_lock(store, "third", ttl_seconds=ttl):  # released after the first
        pass


DEAD_PID = 2 ** 22 + 7  # above Linux's largest pid_max: no process has it
LIVE_PID = os.getpid()  # this test process


def _plant_lock(store, **record) -> None:
    """A lock record left by another rollout of this host (owner "crashed"), with ``record``'s fields."""
    import json
    import socket

    from mlcycle.tasks.rollout.orchestrate import LOCK_KEY

    store.put_bytes(LOCK_KEY, json.dumps({"owner": "crashed", "host": socket.gethostname(),
                                          "at": "2026-01-01T00:00:00+00:00", **record}).encode())


def _taken_over_by_next(settings, store) -> None:
    import json

    from mlcycle.tasks.rollout.orchestrate import LOCK_KEY, deployment_lock

    with deployment_lock(store, "next", ttl_seconds=settings.rollout.lease_seconds):
        assert json.loads(store.get_bytes(LOCK_KEY))["owner"] == "next"
    assert json.loads(store.get_bytes(LOCK_KEY))["released"] is True


def _refused_to_next(settings, store) -> None:
    from mlcycle.tasks.rollout.orchestrate import deployment_lock
    from mlcycle.tasks.rollout.targets import RolloutError

    with pytest.raises(RolloutError, match="another rollout holds the lease: .* is held by 'crashed'"), \
            deployment_lock(store, "next", ttl_seconds=settings.rollout.lease_seconds):
        pass


def test_a_lock_without_an_expiry_is_taken_over(settings):
    """The lock file of an older mlcycle has no expiry: it is taken over, not obeyed for an hour, even while
    the pid it names is alive."""
    from mlcycle.tasks.storage import open_store

    store = open_store(settings)
    _plant_lock(store, pid=LIVE_PID, expires_at="2999-01-01T00:00:00+00:00")
    _refused_to_next(settings, store)  # the same record with an expiry still to come is obeyed
    _plant_lock(store, pid=LIVE_PID)
    _taken_over_by_next(settings, store)


def test_a_lock_held_by_a_dead_process_of_this_host_is_taken_over(settings):
    """A lease whose expiry is far off but whose holder (a process of this host) is gone is free at once."""
    from mlcycle.tasks.storage import open_store

    store = open_store(settings)
    _plant_lock(store, pid=LIVE_PID, expires_at="2999-01-01T00:00:00+00:00")
    _refused_to_next(settings, store)  # the same record held by a living process is obeyed
    _plant_lock(store, pid=DEAD_PID, expires_at="2999-01-01T00:00:00+00:00")
    _taken_over_by_next(settings, store)


def test_an_image_needs_the_docker_target(settings):
    from mlcycle.tasks.rollout.orchestrate import rollout
    from mlcycle.tasks.rollout.targets import RolloutError
    from mlcycle.tasks.storage import open_store

    with pytest.raises(RolloutError, match="--target docker"):
        rollout(settings, open_store(settings), image="mlcycle-serving:x", target="process")
