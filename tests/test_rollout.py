"""Rollout on the ``process`` target: blue/green behind the stable endpoint, failures, rollback, records.

Also home of what the docker tests reuse (tests/test_rollout_docker.py, tests/test_images.py):
:func:`rollout_models` trains two real model versions once per session (v1 promoted, v2 a different
family), imports both into BentoML and builds their bentos, plus a *broken* bento whose model file was
altered after packaging (the service refuses to load it: never ready).

The tests of one target form a scenario, in file order, against one home: v1 goes live, v2 replaces it
under continuous traffic, a broken candidate fails, a latency budget fails, rollback goes back and forth.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.test_endpoint import NEEDS_NGINX, Client

pytestmark = NEEDS_NGINX

ROLLOUT = {"readiness_timeout_seconds": 120, "drain_seconds": 15, "stop_grace_seconds": 10}
SERVING = {"canary_rows": 120, "latency_requests": 20}


@dataclass
class Models:
    home: Path
    v1: object      # tasks.records.serving.BentoRef
    v2: object
    broken: str     # a bento tag whose model file does not match the registry's sha256
    request: dict   # one valid /predict body


_CACHE: dict[str, Models] = {}


def rollout_settings(home: Path, **rollout):
    """Settings of the rollout tests on ``home``: fast training, few canaries, patient readiness."""
    from tests.support.training import fast_settings

    return fast_settings(home, training={"family": "hist_gradient_boosting"}, serving=SERVING,
                         rollout={**ROLLOUT, **rollout})


def rollout_models(tmp_path_factory) -> Models:
    """Two registered, packaged versions and a broken bento, built once per session."""
    if "models" in _CACHE:
        return _CACHE["models"]
    from threadpoolctl import threadpool_limits

    from mlcycle.tasks.evaluation.gate import decide
    from mlcycle.tasks.registry.aliases import promote
    from mlcycle.tasks.registry.versions import register_candidate
    from mlcycle.tasks.serving.client import example_request
    from mlcycle.tasks.serving.packaging import build_bento, import_model
    from mlcycle.tasks.storage import LocalStore
    from mlcycle.tasks.training.challenger import compare_with_champion, train_challenger
    from mlcycle.tasks.training.window import select_window
    from tests.support.training import DAYS, seed_validated

    home = tmp_path_factory.mktemp("rollout-models")
    settings = rollout_settings(home)
    store = LocalStore(settings.store_root)
    bentos = []
    with threadpool_limits(1):
        seed_validated(store, settings)
        for family in ("hist_gradient_boosting", "logistic_regression"):
            trained = settings.model_copy(update={"training": settings.training.model_copy(update={"family": family})})
            candidate = train_challenger(store, trained, select_window(store, days=DAYS))
            comparison = compare_with_champion(store, trained, candidate)
            version = register_candidate(store, candidate, comparison, decide(trained.gate, candidate, comparison))
            if version.version == 1:
                promote(store, version.name, 1, reason="rollout tests")
            bentos.append(build_bento(settings, import_model(store, settings, version.version)))
    models = Models(home=home, v1=bentos[0], v2=bentos[1], broken=corrupt_bento(settings, bentos[0]),
                    request=example_request(store, settings, bentos[0].model_name, bentos[0].model_version))
    _CACHE["models"] = models
    return models


def corrupt_bento(settings, bento) -> str:
    """A copy of ``bento`` serving a copy of its model whose model.joblib was altered (sha256 mismatch)."""
    from mlcycle.tasks.serving.packaging import bento_dir, bentoml_home

    name, version = bento.model_tag.split(":")
    models = bentoml_home(settings) / "models" / name
    broken_model = f"{version}-altered"
    shutil.copytree(models / version, models / broken_model)
    yaml_path = models / broken_model / "model.yaml"
    yaml_path.write_text(yaml_path.read_text().replace(f"version: {version}", f"version: {broken_model}"))
    with open(models / broken_model / "model.joblib", "ab") as fh:
        fh.write(b"\0tampered")
    source = bento_dir(settings, bento.tag)
    broken_tag = f"{bento.tag}-broken"
    target = source.parent / broken_tag.split(":")[1]
    shutil.copytree(source, target)
    text = (target / "bento.yaml").read_text().replace(bento.model_tag, f"{name}:{broken_model}")
    (target / "bento.yaml").write_text(text.replace(f"version: {source.name}", f"version: {target.name}"))
    return broken_tag


def clone_home(models: Models, dest: Path, **rollout):
    """Settings on a copy of the models' home (registry, BentoML store) with a fresh endpoint port."""
    shutil.copytree(models.home, dest, ignore=shutil.ignore_patterns("run", "deployments", "logs", "cache"))
    return rollout_settings(dest, endpoint_port=free_port(), **rollout)


def predict(url: str, body: dict) -> dict:
    response = httpx.post(f"{url}/predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return {**response.json(), "deployment": response.headers.get("x-mlcycle-deployment")}


def traffic(url: str, body: dict) -> Client:
    """A client sending /predict continuously through ``url``, recording the model version of each answer."""
    return Client(url, body=lambda i: body, version_of=lambda payload: payload["model_version"],
                  max_requests=4000, max_seconds=240)


class Scenario:
    """One home, one target: what the tests of a module share, in order."""

    def __init__(self, settings, models: Models, target: str) -> None:
        from mlcycle.tasks.storage import LocalStore

        self.settings, self.models, self.target = settings, models, target
        self.store = LocalStore(settings.store_root)
        self.live: dict[str, object] = {}

    def rollout(self, bento_tag: str | None = None, **kw):
        from mlcycle.tasks.rollout.orchestrate import rollout

        return rollout(self.settings, self.store, bento_tag=bento_tag, target=self.target, **kw)

    def roll_v2_under_traffic(self):
        """Roll v2 out while a client keeps sending through the endpoint; the client saw every answer
        switch from v1 to v2 at the moment the deployment record says it went live."""
        with traffic(self.url, self.models.request) as client:
            time.sleep(1.0)
            record = self.rollout(self.models.v2.tag)
            time.sleep(2.0)
        client.assert_switched(1, 2, record.live_since.timestamp())
        return record, client

    def roll_back_under_traffic(self):
        """Roll back from v2 while a client keeps sending; every answer switched from v2 to v1 at go-live."""
        from mlcycle.tasks.rollout.orchestrate import rollback

        with traffic(self.url, self.models.request) as client:
            time.sleep(0.5)
            back = rollback(self.settings, self.store)
            time.sleep(1.0)
        client.assert_switched(2, 1, back.live_since.timestamp())
        return back

    @property
    def url(self) -> str:
        from mlcycle.tasks.rollout.endpoint import endpoint_url

        return endpoint_url(self.settings)

    def teardown(self) -> None:
        from mlcycle.tasks.rollout.orchestrate import teardown

        teardown(self.settings)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    models = rollout_models(tmp_path_factory)
    s = Scenario(clone_home(models, tmp_path_factory.mktemp("process") / "home"), models, "process")
    yield s
    s.teardown()


# --------------------------------------------------------------------------------------------------
# the scenario
# --------------------------------------------------------------------------------------------------


def test_first_rollout_serves_v1_through_the_stable_url(scenario):
    from mlcycle.tasks.rollout.orchestrate import read_current

    record = scenario.rollout(scenario.models.v1.tag)
    assert record.status == "live" and record.model_version == "1" and record.previous_id is None
    assert record.canary.rows == 120 and record.canary.max_abs_diff <= 1e-9
    assert record.timings.start_to_ready_seconds > 0 and record.timings.switch_seconds is not None
    answer = predict(scenario.url, scenario.models.request)
    assert answer["model_version"] == 1 and answer["deployment"] == record.id
    assert read_current(scenario.store).id == record.id
    assert record.endpoint_url == scenario.url
    scenario.live["v1"] = record


def test_v2_replaces_v1_under_continuous_traffic_without_a_failed_request(scenario):
    from mlcycle.tasks import stack
    from mlcycle.tasks.rollout.orchestrate import find, history, read_current

    v1 = scenario.live["v1"]
    record, client = scenario.roll_v2_under_traffic()
    assert len(client.versions) > 50
    assert record.status == "live" and record.model_version == "2" and record.previous_id == v1.id
    assert read_current(scenario.store).id == record.id
    retired = find(scenario.store, v1.id)
    assert retired.status == "retired" and retired.replaced_by == record.id and retired.ended_at
    assert not stack.pid_alive(v1.backend.pid)  # the old backend was stopped after the drain
    assert [r.id for r in history(scenario.store)][:2] == [record.id, v1.id]
    scenario.live["v2"] = record


def test_a_candidate_that_never_becomes_ready_leaves_v2_serving_and_is_recorded(scenario):
    from mlcycle.tasks import stack
    from mlcycle.tasks.rollout.orchestrate import RolloutFailed, history, read_current

    v2 = scenario.live["v2"]
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

    with pytest.raises(RolloutFailed, match="over the budget") as failed:
        rollout(strict, scenario.store, bento_tag=scenario.models.v1.tag, target="process")
    assert failed.value.record.failed_stage == "canary"
    assert read_current(scenario.store).id == scenario.live["v2"].id
    assert predict(scenario.url, scenario.models.request)["model_version"] == 2


def test_rollback_returns_to_v1_and_a_second_rollback_to_v2(scenario):
    from mlcycle.tasks.rollout.orchestrate import read_current, rollback

    v2 = scenario.live["v2"]
    back = scenario.roll_back_under_traffic()
    assert back.kind == "rollback" and back.rollback_of == v2.id and back.model_version == "1"
    assert read_current(scenario.store).id == back.id
    forth = rollback(scenario.settings, scenario.store)
    assert forth.model_version == "2" and forth.rollback_of == back.id
    assert predict(scenario.url, scenario.models.request)["model_version"] == 2


def test_current_status_reports_the_stable_url_and_what_runs(scenario):
    from mlcycle.tasks.rollout.orchestrate import current_status

    status = current_status(scenario.settings, scenario.store)
    assert status.endpoint_url == scenario.url and status.endpoint_running and status.backend_alive
    assert status.endpoint_serves == status.deployment.id


# --------------------------------------------------------------------------------------------------
# records and guards (no server)
# --------------------------------------------------------------------------------------------------


def test_rollback_with_nothing_before_names_the_problem(settings):
    from mlcycle.tasks.rollout.orchestrate import rollback
    from mlcycle.tasks.rollout.targets import RolloutError
    from mlcycle.tasks.storage import open_store

    with pytest.raises(RolloutError, match="nothing to roll back"):
        rollback(settings, open_store(settings))


def test_a_second_rollout_waits_for_the_lock_of_a_live_one(settings):
    from mlcycle.tasks.rollout.orchestrate import deployment_lock
    from mlcycle.tasks.rollout.targets import RolloutError
    from mlcycle.tasks.storage import open_store

    store = open_store(settings)
    with deployment_lock(store, "first"), pytest.raises(RolloutError, match="holds"), deployment_lock(store, "second"):
        pass
    with deployment_lock(store, "third"):  # released after the first
        pass


def test_a_lock_left_by_a_dead_process_is_taken_over(settings):
    import json
    import socket

    from mlcycle.tasks.rollout.orchestrate import LOCK_KEY, deployment_lock
    from mlcycle.tasks.storage import open_store

    store = open_store(settings)
    store.put_bytes(LOCK_KEY, json.dumps({"owner": "crashed", "pid": 2 ** 22 + 7, "host": socket.gethostname(),
                                          "at": "2026-01-01T00:00:00+00:00"}).encode())
    with deployment_lock(store, "next"):
        assert json.loads(store.get_bytes(LOCK_KEY))["owner"] == "next"
    assert not store.exists(LOCK_KEY)


def test_an_image_needs_the_docker_target(settings):
    from mlcycle.tasks.rollout.orchestrate import rollout
    from mlcycle.tasks.rollout.targets import RolloutError
    from mlcycle.tasks.storage import open_store

    with pytest.raises(RolloutError, match="--target docker"):
        rollout(settings, open_store(settings), image="mlcycle-serving:x", target="process")
