"""The model registry: never-repeating versions, no half versions, verified loads, aliases, lineage, CLI.

Registration and alias tests run against both store backends (a local directory and S3 over HTTP on
moto's server): the exclusive create behind version numbers is ``os.link`` on one and
``If-None-Match: *`` on the other.
"""

from __future__ import annotations

import datetime as dt
import json

import joblib
import pytest

from mlcycle.tasks.partitions import read_manifest
from mlcycle.tasks.records.evaluation import GateDecision
from mlcycle.tasks.records.registry import AliasEvent
from mlcycle.tasks.records.training import Comparison
from mlcycle.tasks.registry.aliases import ChampionChanged, promote, rollback
from mlcycle.tasks.registry.registration import register_candidate
from mlcycle.tasks.registry.versions import (
    ModelNotFound,
    RegistryError,
    alias_key,
    list_versions,
    load_metadata,
    load_model,
    load_profile,
    read_alias,
    seal_key,
    version_prefix,
)
from mlcycle.tasks.storage import IntegrityError, StoreUnavailable, sha256_bytes
from mlcycle.tasks.training.challenger import train_challenger
from mlcycle.tasks.training.window import select_window
from tests.support.concurrency import at_once
from tests.support.env import run_cli
from tests.support.registry import fitted_model, register_fitted
from tests.support.training import (
    START,
    one_thread_per_fit,
)

NAME = "loans-default"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread_per_fit():
        yield


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A small fitted pipeline, its joblib bytes, and the candidate describing it (tests/support/registry.py)."""
    from tests.support.env import make_settings

    return fitted_model(make_settings(tmp_path_factory.mktemp("fitted")), NAME)


def _register(store, fitted) -> int:
    return register_fitted(store, fitted).version


class FailingStore:
    """A store whose writes of keys matching ``fails`` raise a transient fault (a network cut)."""

    def __init__(self, inner, fails) -> None:
        self.inner, self.fails = inner, fails

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_bytes(self, key, data):
        if self.fails(key):
            raise StoreUnavailable(f"{self.inner.description}: cannot write {key!r}: connection reset")
        return self.inner.put_bytes(key, data)

    def create_exclusive(self, key, data):
        if self.fails(key):
            raise StoreUnavailable(f"{self.inner.description}: cannot create {key!r}: connection reset")
        return self.inner.create_exclusive(key, data)


# --------------------------------------------------------------------------------------------------
# versions (both backends)
# --------------------------------------------------------------------------------------------------


@pytest.mark.minio
def test_concurrent_registrations_get_distinct_versions(store, fitted):
    versions, errors = at_once(6, lambda _: _register(store, fitted))
    assert not errors
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]
    assert [v.version for v in list_versions(store, NAME)] == [6, 5, 4, 3, 2, 1]


@pytest.mark.minio
def test_store_failure_mid_registration_leaves_no_half_version_and_number_is_not_reused(store, fitted):
    first = _register(store, fitted)
    promote(store, NAME, first, reason="first")
    broken = FailingStore(store, lambda key: key.endswith("/metadata.json"))
    with pytest.raises(StoreUnavailable, match="connection reset"):
        _register(broken, fitted)
    assert [v.version for v in list_versions(store, NAME)] == [1]  # version 2 is invisible
    with pytest.raises(ModelNotFound, match="has no version 2"):
        load_model(store, NAME, 2)
    assert read_alias(store, NAME).version == 1 and load_model(store, NAME).version == 1
    assert _register(store, fitted) == 3  # 2 was claimed by the failed registration: never reused


@pytest.mark.minio
def test_rollback_restores_the_previous_champion(store, fitted):
    v1, v2, v3 = (_register(store, fitted) for _ in range(3))
    promote(store, NAME, v1, reason="first")
    promote(store, NAME, v2, reason="better")
    pointer = promote(store, NAME, v3, reason="even better")
    assert (pointer.version, pointer.previous.version) == (3, 2)
    back = rollback(store, NAME, reason="v3 misbehaves")
    assert (back.version, back.previous.version) == (2, 3)
    assert load_model(store, NAME, "champion").version == 2
    assert load_model(store, NAME, "previous").version == 3
    assert rollback(store, NAME).version == 3  # a second rollback undoes the first
    history = [AliasEvent.model_validate_json(store.get_bytes(key))
               for key in store.list(f"models/{NAME}/aliases/history/")]  # every move, in time order
    assert [(e.action, e.from_version, e.to_version) for e in history] == [
        ("promote", None, 1), ("promote", 1, 2), ("promote", 2, 3), ("rollback", 3, 2), ("rollback", 2, 3)]
    # champion and previous live in one object: one write moves both
    assert store.list(f"models/{NAME}/aliases/") == [alias_key(NAME)] + [
        k for k in store.list(f"models/{NAME}/aliases/history/")]


def test_rollback_without_previous_and_promote_of_unknown_version_are_refused(train_env, fitted):
    _, store = train_env
    with pytest.raises(ModelNotFound, match="nothing was promoted yet"):
        rollback(store, NAME)
    v1 = _register(store, fitted)
    promote(store, NAME, v1, reason="first")
    with pytest.raises(ModelNotFound, match="no previous champion"):
        rollback(store, NAME)
    with pytest.raises(ModelNotFound, match=r"has no version 9; versions are \[1\]"):
        promote(store, NAME, 9, reason="typo")
    assert read_alias(store, NAME).version == 1


def test_promotion_is_refused_if_the_champion_changed_since_the_gate(train_env, fitted):
    _, store = train_env
    v1, v2, v3 = (_register(store, fitted) for _ in range(3))
    promote(store, NAME, v1, reason="first")
    promote(store, NAME, v2, reason="someone else, meanwhile")
    with pytest.raises(ChampionChanged, match="the champion is now v2, not v1"):
        promote(store, NAME, v3, reason="gate", expected_champion=v1)
    assert read_alias(store, NAME).version == 2


@pytest.mark.minio
def test_concurrent_rollbacks_are_never_lost_and_each_is_recorded(store, fitted):
    """Eight rollbacks at once on champion v2 / previous v1: each swaps the pointer it read, so a lost update
    (two moves decided on the same pointer, last writer wins) shows as the wrong parity. A leftover lock object
    from an older mlcycle is ignored: there is no lock."""
    v1, v2 = _register(store, fitted), _register(store, fitted)
    promote(store, NAME, v1, reason="first")
    promote(store, NAME, v2, reason="second")
    store.put_bytes(f"models/{NAME}/aliases/champion.lock", json.dumps({"token": "dead", "at": "2020-01-01"}).encode())
    _, errors = at_once(8, lambda _: rollback(store, NAME, reason="race"))
    assert not errors
    pointer = read_alias(store, NAME)
    assert (pointer.version, pointer.previous.version) == (v2, v1)  # an even number of swaps, none lost
    history = [AliasEvent.model_validate_json(store.get_bytes(key))
               for key in store.list(f"models/{NAME}/aliases/history/")]
    assert [e.action for e in history].count("rollback") == 8


# --------------------------------------------------------------------------------------------------
# verified loads
# --------------------------------------------------------------------------------------------------


def test_tampered_model_is_refused_before_unpickling(train_env, fitted, monkeypatch):
    settings, store = train_env
    v1 = _register(store, fitted)
    promote(store, NAME, v1, reason="first")
    key = version_prefix(NAME, v1) + "model.joblib"
    store.put_bytes(key, store.get_bytes(key) + b"\x00")  # one appended byte
    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("tampered bytes were unpickled"))
    with pytest.raises(IntegrityError, match=r"model\.joblib is corrupted or was tampered with"):
        load_model(store, NAME)
    with pytest.raises(IntegrityError):
        load_model(store, NAME, v1)
    with pytest.raises(IntegrityError):  # and it cannot become champion either
        promote(store, NAME, v1, reason="again")


def test_swapped_metadata_is_detected(train_env, fitted):
    _, store = train_env
    v1 = _register(store, fitted)
    promote(store, NAME, v1, reason="first")
    key = version_prefix(NAME, v1) + "metadata.json"
    doctored = json.loads(store.get_bytes(key))
    doctored["threshold"] = 0.01
    store.put_bytes(key, json.dumps(doctored).encode())
    with pytest.raises(IntegrityError, match=r"metadata\.json is corrupted or was tampered with"):
        load_metadata(store, NAME, v1)
    assert list_versions(store, NAME)[0].status.startswith("damaged:")
    # rewriting the seal to match does not fool the champion alias, which keeps its own hashes
    seal = json.loads(store.get_bytes(seal_key(NAME, v1)))
    seal["metadata_sha256"] = sha256_bytes(json.dumps(doctored).encode())
    store.put_bytes(seal_key(NAME, v1), json.dumps(seal).encode())
    with pytest.raises(IntegrityError, match="the version was altered"):
        load_model(store, NAME, "champion")


def test_loaded_model_predicts_and_ignores_extra_columns(train_env, fitted):
    settings, store = train_env
    frame = fitted.frame
    v1 = _register(store, fitted)
    model = load_model(store, NAME, str(v1))
    scores = model.predict_proba(frame)  # id, timestamp and target columns included
    assert scores.shape == (len(frame),) and model.metadata.version == v1
    from mlcycle.tasks.features import SchemaMismatch

    with pytest.raises(SchemaMismatch, match=r"no column\(s\) \['income'\]"):
        model.predict_proba(frame.drop(columns=["income"]))
    with pytest.raises(ModelNotFound, match="not a model version"):
        load_model(store, NAME, "latest")


# --------------------------------------------------------------------------------------------------
# a real registration: lineage and the stored evaluation
# --------------------------------------------------------------------------------------------------


def test_lineage_lists_exactly_the_partitions_used(train_env):
    settings, store = train_env
    window = select_window(store, days=5)  # 5 of the 8 validated days
    candidate = train_challenger(store, settings, window)
    decision = GateDecision(promote=False, primary_metric="roc_auc", champion_version=None, rules=[],
                            summary="refused: test", decided_at=dt.datetime.now(dt.UTC))
    version = register_candidate(store, candidate, Comparison(), decision, flow_run_id="run-123")
    lineage = load_metadata(store, NAME, version.version).lineage
    expected = [read_manifest(store, "validated", START + dt.timedelta(days=i)) for i in range(3, 8)]
    assert [(p.date, p.data_key, p.data_sha256, p.rows) for p in lineage.partitions] == [
        (m.date, m.data_key, m.data_sha256, m.rows) for m in expected]
    assert all(p.dataset_schema_hash == settings.dataset.schema_hash() for p in lineage.partitions)
    used_by_split = {p.date for part in (lineage.split.train, lineage.split.validation, lineage.split.test)
                     for p in part.partitions}
    assert used_by_split == {m.date for m in expected}
    assert lineage.flow_run_id == "run-123" and lineage.code_version
    assert {"scikit-learn", "numpy", "pandas", "joblib"} <= set(lineage.libraries)
    metadata_text = store.get_bytes(version_prefix(NAME, version.version) + "metadata.json").decode()
    assert "secret" not in metadata_text.lower() and "access_key" not in metadata_text
    profile = load_profile(store, NAME, version.version)
    assert profile.rows == candidate.split.train.rows + candidate.split.validation.rows


# --------------------------------------------------------------------------------------------------
# the CLI
# --------------------------------------------------------------------------------------------------


def test_models_cli_lists_shows_promotes_and_rolls_back(monkeypatch, capsys, env_settings, fitted):
    from mlcycle.tasks.storage import open_store

    settings = env_settings()
    store = open_store(settings)
    v1, v2 = _register(store, fitted), _register(store, fitted)

    code, out, err = run_cli(monkeypatch, capsys, "models", "promote", str(v1), "--json")
    assert code == 0, err
    assert json.loads(out)["version"] == 1
    code, out, _ = run_cli(monkeypatch, capsys, "models", "promote", str(v2), "--reason", "better", "--json")
    assert json.loads(out)["previous"]["version"] == 1
    code, out, _ = run_cli(monkeypatch, capsys, "models", "list", "--json")
    listing = json.loads(out)["versions"]
    assert [(v["version"], v["aliases"]) for v in listing] == [(2, ["champion"]), (1, ["previous"])]
    code, out, _ = run_cli(monkeypatch, capsys, "models", "show", "champion", "--json")
    assert json.loads(out)["version"] == 2 and json.loads(out)["model_sha256"]
    code, out, _ = run_cli(monkeypatch, capsys, "models", "rollback")
    assert code == 0 and "champion v1, previous v2" in out
    code, out, _ = run_cli(monkeypatch, capsys, "models", "show", "1")
    assert code == 0 and "loans-default v1" in out and "sha256" in out

    code, _, err = run_cli(monkeypatch, capsys, "models", "show", "7")
    assert code == 1 and "has no version 7" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(monkeypatch, capsys, "models", "show", "newest")
    assert code == 2 and "VERSION must be a version number" in err
    code, _, err = run_cli(monkeypatch, capsys, "train", "--family", "forest")
    assert code == 2 and "unknown model family 'forest'" in err


def test_registry_refuses_unsafe_model_names(train_env, fitted):
    from mlcycle.tasks.storage import UnsafeKey

    _, store = train_env
    with pytest.raises(UnsafeKey, match="model name"):
        list_versions(store, "../etc")
    with pytest.raises(RegistryError, match="needs model.joblib"):  # a candidate whose model was never staged
        register_candidate(store, fitted.candidate, Comparison(), fitted.decision)
