"""The sweep of leftovers and the registration that never writes where another attempt may (both backends).

A registration killed mid-write, then retried by the same flow run while the first attempt is only frozen:
the retry takes the claim over and writes its own ``attempt-1/`` folder; the first attempt, woken, loses the
seal and nothing it wrote is reachable; the sealed bytes never change. ``mlcycle gc`` then removes exactly the
unreachable: staging, a dead registration's files, the lost attempt's files, expired trigger claims.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from mlcycle.tasks.gc import gc
from mlcycle.tasks.monitor.trigger import TRIGGERS, claim_trigger
from mlcycle.tasks.records.monitoring import DriftDecision, MonitorReport, MonitorWindow, TriggerRecord
from mlcycle.tasks.records.registry import ModelDraft
from mlcycle.tasks.records.training import Comparison
from mlcycle.tasks.registry.registration import (
    VersionSealedMeanwhile,
    allocate_version,
    register_candidate,
    write_version,
)
from mlcycle.tasks.registry.versions import claim_key, list_versions, load_metadata, load_model
from mlcycle.tasks.storage import sha256_bytes
from tests.support.env import make_settings, run_cli
from tests.support.registry import fitted_model, register_fitted, staged

NAME = "loans-default"
LATER = dt.timedelta(days=2)  # "now" two days on: everything written by the test is older than the 24 h limit


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return fitted_model(make_settings(tmp_path_factory.mktemp("fitted")))


def _sealed_bytes(store, version: int) -> dict[str, str]:
    """sha256 of every object a sealed version reaches (its metadata and artifacts)."""
    metadata = load_metadata(store, NAME, version)
    keys = [a.key for a in metadata.artifacts.values()]
    return {key: sha256_bytes(store.get_bytes(key)) for key in keys} | {"metadata": metadata.model_sha256}


@pytest.mark.minio
def test_a_retry_takes_the_claim_over_and_the_frozen_first_attempt_can_neither_seal_nor_touch_it(store, fitted):
    first = staged(store, fitted)
    version = allocate_version(store, NAME, flow_run_id="run-1", staging=first.staging_prefix)
    store.put_bytes(f"models/{NAME}/{version}/model.joblib", b"half a model")  # attempt 0, then frozen

    retried = register_candidate(store, staged(store, fitted), Comparison(), fitted.decision, flow_run_id="run-1")
    assert retried.version == version == 1
    assert retried.artifacts["model.joblib"].key == f"models/{NAME}/1/attempt-1/model.joblib"
    assert json.loads(store.get_bytes(claim_key(NAME, 1)))["attempt"] == 1
    before = _sealed_bytes(store, 1)

    sealed = load_metadata(store, NAME, 1)  # the woken first attempt finishes its write as attempt 0
    draft = ModelDraft(**sealed.model_dump(include=set(ModelDraft.model_fields)))
    with pytest.raises(VersionSealedMeanwhile, match="sealed by another writer"):
        write_version(store, draft, 1, {"model.joblib": fitted.model_bytes}, attempt=0)
    assert _sealed_bytes(store, 1) == before
    assert load_model(store, NAME, 1).version == 1
    # the same run registering once more gets its sealed version back and claims nothing new
    again = register_candidate(store, staged(store, fitted), Comparison(), fitted.decision, flow_run_id="run-1")
    assert again.version == 1 and [v.version for v in list_versions(store, NAME)] == [1]


def _report(window_id: str) -> MonitorReport:
    now = dt.datetime.now(dt.UTC)
    window = MonitorWindow(model=NAME, version=1, start=now - dt.timedelta(hours=24), end=now)
    drift = DriftDecision(enough_data=True, rows=1000, min_rows=500, dataset_drift=True, reasons=["x drifted"])
    return MonitorReport(window_id=window_id, window=window, rows=1000, drift=drift, performance=None,
                         reasons=["x drifted"])


@pytest.mark.minio
def test_gc_removes_only_what_nothing_reaches(store, fitted, monkeypatch, capsys, backend_settings):
    v1 = register_fitted(store, fitted).version
    store.put_bytes(f"models/{NAME}/{v1}/attempt-3/model.joblib", b"a lost attempt")
    dead = allocate_version(store, NAME, flow_run_id="killed")  # claimed, never sealed
    store.put_bytes(f"models/{NAME}/{dead}/model.joblib", b"half")
    store.put_bytes(f"models/{NAME}/staging/abandoned/model.joblib", b"never registered")
    claimed = claim_trigger(store, _report("w1"), dt.datetime.now(dt.UTC), 24, claim_seconds=60)
    before = _sealed_bytes(store, v1)
    everything = set(store.list(""))

    young = gc(store, dt.datetime.now(dt.UTC), 24)  # nothing is old enough yet
    assert (young.delete, young.expire_triggers) == ({}, []) and set(store.list("")) == everything

    now = dt.datetime.now(dt.UTC) + LATER
    plan = gc(store, now, 24, dry_run=True)
    assert set(plan.delete) == {f"models/{NAME}/{v1}/attempt-3/model.joblib", f"models/{NAME}/{dead}/model.joblib",
                                f"models/{NAME}/staging/abandoned/model.joblib"}
    assert plan.expire_triggers == [claimed.record.seq]
    assert set(store.list("")) == everything  # a dry run removes nothing

    gc(store, now, 24)
    assert set(store.list("")) == everything - set(plan.delete)
    assert store.exists(claim_key(NAME, dead))  # the number stays taken
    assert _sealed_bytes(store, v1) == before and load_model(store, NAME, "1").version == v1
    ledger = [TriggerRecord.model_validate_json(store.get_bytes(k)) for k in store.list(TRIGGERS)]
    assert [r.status for r in ledger] == ["expired"]
    assert gc(store, now, 24).delete == {}  # idempotent

    for key, value in {"MLCYCLE_STORE": backend_settings.store, "MLCYCLE_HOME": str(backend_settings.home)}.items():
        monkeypatch.setenv(key, value)
    if backend_settings.store == "minio":
        for key in ("s3_endpoint", "s3_bucket"):
            monkeypatch.setenv(f"MLCYCLE_{key.upper()}", str(getattr(backend_settings, key)))
        monkeypatch.setenv("MLCYCLE_S3_ACCESS_KEY", backend_settings.s3_access_key.get_secret_value())
        monkeypatch.setenv("MLCYCLE_S3_SECRET_KEY", backend_settings.s3_secret_key.get_secret_value())
    code, out, err = run_cli(monkeypatch, capsys, "gc", "--dry-run", "--older-than-hours", "0", "--json")
    assert code == 0, err
    assert json.loads(out)["dry_run"] is True and json.loads(out)["delete"] == {}


@pytest.mark.minio
def test_gc_leaves_a_version_it_cannot_verify_alone(store, fitted):
    v1 = register_fitted(store, fitted).version
    metadata_key = f"models/{NAME}/{v1}/metadata.json"
    store.put_bytes(metadata_key, store.get_bytes(metadata_key).replace(b"{", b"{ ", 1))  # damaged
    store.put_bytes(f"models/{NAME}/{v1}/stray.bin", b"x")
    plan = gc(store, dt.datetime.now(dt.UTC) + LATER, 24)
    assert plan.delete == {} and any("does not verify" in why for why in plan.skipped)
    assert store.exists(f"models/{NAME}/{v1}/stray.bin")


def test_gc_removes_old_temporaries_of_unfinished_local_writes_but_not_the_lock(settings):
    from mlcycle.tasks.storage import open_store

    store = open_store(settings)
    store.put_bytes("x/y.json", b"{}")
    store.replace_if("x/y.json", b"{1}", store.read_tagged("x/y.json").tag)  # creates .tmp/conditional.lock
    tmp = settings.store_root / ".tmp"
    (tmp / "dead.part").write_bytes(b"half a write")
    plan = gc(store, dt.datetime.now(dt.UTC) + LATER, 24)
    assert plan.temporaries == [str((tmp / "dead.part").resolve())]
    assert not (tmp / "dead.part").exists() and (tmp / "conditional.lock").exists()
