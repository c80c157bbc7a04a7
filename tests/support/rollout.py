"""Rollout test helpers: two real model versions packaged once per session, a broken bento, a home per
scenario, and the scenario itself (what one target's tests share).

:func:`rollout_models` trains two real model versions once per session (v1 promoted, v2 a different
family), imports both into BentoML and builds their bentos, plus a *broken* bento whose model file was
altered after packaging (the service refuses to load it: never ready). A :class:`Scenario` is one home on
one target; each test brings it to the state it needs (:meth:`Scenario.serving`), so a test passes alone
and in any order.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.endpoint import Client
from tests.support.env import free_port

ROLLOUT = {"readiness_timeout_seconds": 120, "drain_seconds": 15, "stop_grace_seconds": 10}


SERVING = {"canary_rows": 120, "latency_requests": 20}


@dataclass
class Models:
    home: Path
    v1: object      # tasks.records.serving.BentoRef
    v2: object
    broken: str     # a bento tag whose model file does not match the registry's sha256
    request: dict   # one valid /predict body


def rollout_settings(home: Path, **rollout):
    """Settings of the rollout tests on ``home``: fast training, few canaries, patient readiness."""
    from tests.support.training import fast_settings

    return fast_settings(home, training={"family": "hist_gradient_boosting"}, serving=SERVING,
                         rollout={**ROLLOUT, **rollout})


def build_rollout_models(home: Path) -> Models:
    """Two registered, packaged versions and a broken bento in ``home`` (the session fixture
    ``rollout_models`` of tests/conftest.py builds them once)."""
    from threadpoolctl import threadpool_limits

    from mlcycle.tasks.evaluation.gate import decide
    from mlcycle.tasks.registry.aliases import promote
    from mlcycle.tasks.registry.registration import register_candidate
    from mlcycle.tasks.serving.client import example_request
    from mlcycle.tasks.serving.packaging import build_bento, import_model
    from mlcycle.tasks.storage import LocalStore
    from mlcycle.tasks.training.challenger import compare_with_champion, train_challenger
    from mlcycle.tasks.training.window import select_window
    from tests.support.training import DAYS, seed_validated

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
    return Models(home=home, v1=bentos[0], v2=bentos[1], broken=corrupt_bento(settings, bentos[0]),
                  request=example_request(store, settings, bentos[0].model_name, bentos[0].model_version))


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
    """One home, one target: what the tests of a module share. No test relies on the one before it: each
    brings the home to the state it starts from with :meth:`serving`."""

    def __init__(self, settings, models: Models, target: str) -> None:
        from mlcycle.tasks.storage import LocalStore

        self.settings, self.models, self.target = settings, models, target
        self.store = LocalStore(settings.store_root)

    def rollout(self, bento_tag: str | None = None, **kw):
        from mlcycle.tasks.rollout.orchestrate import rollout

        return rollout(self.settings, self.store, bento_tag=bento_tag, target=self.target, **kw)

    def current(self):
        from mlcycle.tasks.rollout.orchestrate import read_current

        return read_current(self.store)

    def bento(self, version: str) -> str:
        return {"1": self.models.v1.tag, "2": self.models.v2.tag}[version]

    def serving(self, version: str):
        """``version`` ("1" or "2") live with the other version live before it (where a rollback goes),
        whatever the tests before left: rolls out what is missing; returns the live deployment record."""
        current = self.current()
        if current is not None and current.model_version == version and current.previous_id is not None:
            return current
        if current is None or current.model_version == version:
            self.rollout(self.bento("2" if version == "1" else "1"))
        return self.rollout(self.bento(version))

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
