"""The object store goes away in the middle of real runs: ingest, model registration, inference logging.

Each case runs on both backends: the S3 one loses its server (moto stopped, connection refused), the
local one has its directory remounted read-only (EROFS, even for root). The outage starts right after
a chosen write succeeded (see ``OutageAt`` in conftest.py) and either ends while the run retries, or
outlasts the retries. What each test asserts: what survived (everything stored before the fault),
what was lost (nothing), what is visible (never a half partition or a half model version), and that
after recovery the store converges to exactly what a run without the fault produces.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pytest

from mlcycle.tasks.partitions import list_partitions, read_manifest, read_partition
from mlcycle.tasks.storage import open_store
from tests.support.env import run_cli
from tests.support.faults import (
    CLEAN_DAY,
    diff_fingerprints,
    flow_settings,
    outage_after_write,
    retried_tasks,
    s3_env,
    seed_store,
    store_fingerprint,
)

pytestmark = [pytest.mark.flow, pytest.mark.slow]

DAY = CLEAN_DAY  # the date the clean_ingest reference holds
MODEL = "loans-default"
AFTER_RAW = r"^raw/date=[0-9-]+/manifest\.json$"  # the raw partition is complete; validation is next
AFTER_DOCS_PAGE = r"/docs/validations/.+\.html$"  # GX's run page is up; result.json and outcome.json are not
AFTER_MODEL_FILE = r"^models/[^/]+/\d+/model\.joblib$"  # the version's model is written; metadata/seal are not


def _env(backend: str, s3_server) -> dict[str, str]:
    return s3_env(s3_server) if backend == "minio" else {}


# --------------------------------------------------------------------------------------------------
# ingest
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", "minio"])
def test_ingest_rides_out_an_outage_mid_validation_and_ends_like_a_clean_run(
        backend, request, tmp_path, outages, monkeypatch, clean_ingest):
    from mlcycle.flows.ingest import ingest_flow

    server = request.getfixturevalue("s3_running") if backend == "minio" else None
    with flow_settings(tmp_path / "home", RETRIES__INGEST__RETRIES="5", **_env(backend, server)) as settings:
        store = open_store(settings)
        store.check()
        outage = outages(settings)
        with outage_after_write(monkeypatch, outage, AFTER_DOCS_PAGE, restore_after=1.5) as fired:
            state = ingest_flow(date=DAY, return_state=True)
        assert len(fired) == 1 and "/docs/validations/" in fired[0], fired  # the fault happened mid-folder
        assert state.is_completed(), state.message
        assert any(name.startswith("validate") for name in retried_tasks(state.state_details.flow_run_id)), \
            "the validation task should have been retried through the outage"
        assert read_manifest(store, "validated", dt.date.fromisoformat(DAY)).rows == 300
        # the interrupted attempt's Data Docs page is gone: same keys as a run that never failed
        fingerprint = store_fingerprint(store)
        assert fingerprint == clean_ingest, diff_fingerprints(fingerprint, clean_ingest)


@pytest.mark.parametrize("backend", ["local", "minio"])
def test_ingest_fails_clearly_when_the_store_stays_down_then_a_rerun_ends_like_a_clean_run(
        backend, request, tmp_path, outages, monkeypatch, clean_ingest):
    from mlcycle.flows.ingest import ingest_flow

    server = request.getfixturevalue("s3_running") if backend == "minio" else None
    day = dt.date.fromisoformat(DAY)
    with flow_settings(tmp_path / "home", RETRIES__INGEST__RETRIES="1", **_env(backend, server)) as settings:
        store = open_store(settings)
        store.check()
        outage = outages(settings)
        started = time.monotonic()
        with outage_after_write(monkeypatch, outage, AFTER_RAW) as fired:
            state = ingest_flow(date=DAY, return_state=True)
        assert fired == [f"raw/date={DAY}/manifest.json"]
        assert state.is_failed()
        assert time.monotonic() - started < 120  # fails after its retries, does not hang
        if backend == "minio":
            assert "StoreUnavailable" in state.message and "endpoint unreachable" in state.message
            assert settings.s3_endpoint in state.message
        else:
            assert "StoreUnavailable" in state.message and "Read-only file system" in state.message
            assert str(settings.store_root) in state.message  # the error names the directory

        outage.restore()
        # survived: the raw partition written before the fault, whole and verified
        raw = read_manifest(store, "raw", day)
        assert len(read_partition(store, raw.ref())) == 300
        # nothing half-done is visible: no validated partition (not even its data), no validation verdict
        assert list_partitions(store, "validated") == [] and store.list("validated/") == []
        assert not [k for k in store.list("validation/") if k.endswith("outcome.json")]

        rerun = ingest_flow(date=DAY, return_state=True)
        assert rerun.is_completed(), rerun.message
        fingerprint = store_fingerprint(store)
        assert fingerprint == clean_ingest, diff_fingerprints(fingerprint, clean_ingest)


# --------------------------------------------------------------------------------------------------
# model registration
# --------------------------------------------------------------------------------------------------


def _registry_keys(store) -> list[str]:
    return [k for k in store.list(f"models/{MODEL}/") if "/plots/" not in k]


@pytest.mark.parametrize("backend", ["local", "minio"])
def test_registration_rides_out_an_outage_and_registers_exactly_one_whole_version(
        backend, request, tmp_path, outages, monkeypatch, validated_template, prefect_harness):
    from mlcycle.flows.train import train_flow
    from mlcycle.tasks.registry.versions import list_versions, load_model, read_alias

    server = request.getfixturevalue("s3_running") if backend == "minio" else None
    with flow_settings(tmp_path / "home", RETRIES__TRAINING__RETRIES="5", **_env(backend, server)) as settings:
        seed_store(validated_template, settings)
        store = open_store(settings)
        outage = outages(settings)
        with outage_after_write(monkeypatch, outage, AFTER_MODEL_FILE, restore_after=1.5) as fired:
            state = train_flow(return_state=True)
        assert fired == [f"models/{MODEL}/1/model.joblib"]
        assert state.is_completed(), state.message
        assert any(name.startswith("register-model") for name in retried_tasks(state.state_details.flow_run_id))
        outcome = state.result()
        assert outcome.version == 1 and outcome.promoted
        # the retry finished its own claimed version: one claim, one seal, no orphan number
        assert [v.version for v in list_versions(store, MODEL)] == [1]
        assert store.list(f"models/{MODEL}/versions/") == [f"models/{MODEL}/versions/1.claim",
                                                           f"models/{MODEL}/versions/1.json"]
        assert load_model(store, MODEL, "champion").version == 1 and read_alias(store, MODEL).version == 1
        assert store.list(f"models/{MODEL}/staging/") == []


@pytest.mark.parametrize("backend", ["local", "minio"])
def test_registration_outage_beyond_the_retries_leaves_no_half_version_and_a_rerun_adds_one(
        backend, request, tmp_path, outages, monkeypatch, capsys, validated_template, prefect_harness):
    from mlcycle.flows.train import train_flow
    from mlcycle.tasks.registry.versions import ModelNotFound, list_versions, load_model, read_alias

    server = request.getfixturevalue("s3_running") if backend == "minio" else None
    with flow_settings(tmp_path / "home", RETRIES__TRAINING__RETRIES="1", **_env(backend, server)) as settings:
        seed_store(validated_template, settings)
        store = open_store(settings)
        outage = outages(settings)
        with outage_after_write(monkeypatch, outage, AFTER_MODEL_FILE) as fired:
            state = train_flow(return_state=True)
        assert fired == [f"models/{MODEL}/1/model.joblib"]
        assert state.is_failed() and "StoreUnavailable" in state.message, state.message
        outage.restore()

        # no half version: the claimed number 1 and its model file exist, but no version is visible
        assert store.exists(f"models/{MODEL}/1/model.joblib")
        assert list_versions(store, MODEL) == [] and read_alias(store, MODEL) is None
        with pytest.raises(ModelNotFound, match="has no version 1"):
            load_model(store, MODEL, 1)
        code, out, err = run_cli(monkeypatch, capsys, "models", "list", "--json")
        assert code == 0 and json.loads(out)["versions"] == [], (out, err)

        rerun = train_flow(return_state=True)
        assert rerun.is_completed(), rerun.message
        # exactly one new version; number 1 belonged to the failed run and is never reused
        assert [v.version for v in list_versions(store, MODEL)] == [2]
        assert load_model(store, MODEL, "champion").version == 2
        code, out, _ = run_cli(monkeypatch, capsys, "models", "list", "--json")
        assert code == 0 and [v["version"] for v in json.loads(out)["versions"]] == [2]


# --------------------------------------------------------------------------------------------------
# inference logging
# --------------------------------------------------------------------------------------------------


def _submit(log, spec, request_id: str, rows: int = 5) -> None:
    rng = np.random.default_rng(abs(hash(request_id)) % 2**32)
    columns = {}
    for f in spec.features:
        if f.kind == "numeric":
            columns[f.name] = rng.uniform(f.min or 0, f.max or 1, rows).round(0 if f.dtype == "int" else 3)
        else:
            columns[f.name] = np.array(rng.choice(f.categories, rows), dtype=object)
    probabilities = rng.uniform(0, 1, rows)
    assert log.submit(request_id, "/predict", columns, [f"{request_id}-{i}" for i in range(rows)],
                      {"probability": probabilities, "label": (probabilities >= 0.5).astype(np.int8)})


def _writer(store, settings, spill_dir):
    from mlcycle.tasks.inference_log import InferenceLogWriter

    return InferenceLogWriter(store, model=MODEL, model_version=1, features=settings.dataset.features,
                              id_column=settings.dataset.id_column, spill_dir=spill_dir, flush_rows=25,
                              flush_interval_seconds=0.2, upload_attempts=2, retry_delay_seconds=0.05).start()


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@pytest.mark.parametrize("backend", ["local", "minio"])
def test_inference_records_survive_a_store_outage_and_a_restart_during_it(backend, request, tmp_path, outages):
    """Before, during and after an outage; one writer even stops while the store is down (a redeploy)."""
    from mlcycle.tasks.inference_reader import read_inference_log

    server = request.getfixturevalue("s3_running") if backend == "minio" else None
    with flow_settings(tmp_path / "home", **_env(backend, server)) as settings:
        store = open_store(settings)
        store.check()
        outage = outages(settings)
        spill = tmp_path / "spill"
        sent: list[str] = []

        log = _writer(store, settings, spill)
        for i in range(10):
            sent.append(f"before-{i}")
            _submit(log, settings.dataset, sent[-1])
        log.flush()
        assert log.status().written_rows == 50

        outage.begin()
        for i in range(20):
            sent.append(f"during-{i}")
            _submit(log, settings.dataset, sent[-1])
        log.flush()
        during = log.status()
        assert during.spilled_parts >= 1 and during.failed_uploads >= 1 and during.dropped_rows == 0
        assert list(spill.rglob("part-*.parquet"))  # on local disk, not lost
        stopped = log.close()  # the service stops while the store is still down
        assert stopped.queued_rows == 0 and stopped.dropped_rows == 0

        second = _writer(store, settings, spill)  # the next process, same spill folder
        for i in range(6):
            sent.append(f"still-down-{i}")
            _submit(second, settings.dataset, sent[-1])
        second.flush()
        outage.restore()
        for i in range(4):
            sent.append(f"after-{i}")
            _submit(second, settings.dataset, sent[-1])
        _wait(lambda: not list(spill.rglob("part-*.parquet")), 30, "the spilled parts to be re-uploaded")
        final = second.close()
        assert final.dropped_rows == 0 and final.reuploaded_parts >= 1

        logged = read_inference_log(store)
        assert len(logged) == 5 * len(sent)  # records in == records out
        assert sorted(set(logged["request_id"])) == sorted(sent)
        assert not logged.duplicated(["request_id", "row"]).any()  # and none twice
