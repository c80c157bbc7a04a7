"""Corrupted artifacts at rest: one flipped byte in a Parquet partition, a partition manifest,
``model.joblib`` and a version's ``metadata.json``.

Every reader refuses the damaged object with an error naming it and the checksum mismatch, the refusal
is reported where a user looks (a failed Prefect flow run with the reason, a CLI exit 1 with one line
on stderr, a ``damaged:`` status in ``mlcycle models list``), and nothing else is affected: the other
partitions, versions and the champion keep loading.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil

import pytest

from mlcycle.tasks.partitions import list_partitions, manifest_key, read_manifest, read_partition
from mlcycle.tasks.registry.versions import list_versions, load_metadata, load_model, version_prefix
from mlcycle.tasks.storage import IntegrityError, LocalStore, open_store
from tests.support.env import run_cli
from tests.support.faults import copy_store, flow_settings, s3_env
from tests.support.training import copy_template, project_store

pytestmark = [pytest.mark.flow, pytest.mark.slow]

MODEL = "loans-default"
BAD_DAY = dt.date(2026, 10, 4)  # one of the validated template's days (2026-10-01..08)


def flip_byte(store, key: str, position: int | None = None) -> int:
    """Flip one bit of one byte of ``key`` in place (bit rot at rest); returns the position."""
    data = bytearray(store.get_bytes(key))
    position = len(data) // 2 if position is None else position
    data[position] ^= 0x04
    store.put_bytes(key, bytes(data))
    return position


@pytest.fixture(scope="module")
def trained_home(prefect_harness, validated_template, tmp_path_factory):
    """A local store with 8 validated days and a champion v1 trained by the real flow (made once)."""
    from mlcycle.flows.train import train_flow

    home = tmp_path_factory.mktemp("corruption") / "home"
    copy_template(validated_template, home)
    with flow_settings(home):
        outcome = train_flow()
    assert outcome.promoted and outcome.version == 1
    return home


@pytest.fixture(params=["local", "minio"])
def damaged_env(request, trained_home, tmp_path):
    """Settings on a fresh copy of the trained store, on each backend; the flows read the same settings."""
    env = {}
    if request.param == "minio":
        env = s3_env(request.getfixturevalue("s3_running"))
    with flow_settings(tmp_path / "home", **env) as settings:
        if settings.store == "local":
            shutil.copytree(project_store(trained_home), settings.store_root)
        else:
            copy_store(LocalStore(project_store(trained_home)), open_store(settings))
        yield settings, open_store(settings)


def _unaffected(store, settings, except_day: dt.date | None = None) -> None:
    """Everything but the damaged object still verifies."""
    for day in list_partitions(store, "validated"):
        if day != except_day:
            assert len(read_partition(store, read_manifest(store, "validated", day).ref())) > 0


def test_flipped_byte_in_a_validated_partition_is_refused_by_training_and_reported(
        damaged_env, monkeypatch, capsys):
    from mlcycle.flows.train import train_flow
    from mlcycle.tasks.training.window import load_rows, select_window

    settings, store = damaged_env
    manifest = read_manifest(store, "validated", BAD_DAY)
    flip_byte(store, manifest.data_key)

    with pytest.raises(IntegrityError) as info:  # the plain reader
        load_rows(store, settings.dataset, select_window(store, days=8).partitions)
    assert manifest.data_key in str(info.value) and manifest.data_sha256 in str(info.value)
    assert "corrupted or was tampered with" in str(info.value)

    state = train_flow(return_state=True)  # the flow: fails, with the reason in the run's state
    assert state.is_failed() and "IntegrityError" in state.message and manifest.data_key in state.message
    code, _, err = run_cli(monkeypatch, capsys, "train")  # the CLI: exit 1, one line naming the object
    assert code == 1 and "IntegrityError" in err and manifest.data_key in err and len(err.strip().splitlines()) == 1

    assert [v.version for v in list_versions(store, MODEL)] == [1]  # no version trained on damaged data
    assert load_model(store, MODEL).version == 1
    _unaffected(store, settings, except_day=BAD_DAY)


def test_flipped_byte_anywhere_in_a_manifest_is_refused_by_listing_and_training(damaged_env, monkeypatch, capsys):
    from mlcycle.flows.train import train_flow

    settings, store = damaged_env
    key = manifest_key("validated", BAD_DAY)
    original = store.get_bytes(key)
    positions = sorted(random.Random(7).sample(range(len(original)), 40))
    for position in positions:  # 40 single-byte flips: every one refused by checksum or by parsing
        flip_byte(store, key, position)
        with pytest.raises(IntegrityError, match="manifest .*manifest.json is corrupted"):
            read_manifest(store, "validated", BAD_DAY)
        store.put_bytes(key, original)
    assert read_manifest(store, "validated", BAD_DAY).date == BAD_DAY

    # a flip that keeps the JSON valid (a digit of the row count) is caught by the checksum alone
    position = original.index(b'"rows": ') + len(b'"rows": ')
    flip_byte(store, key, position)
    with pytest.raises(IntegrityError, match="content has sha256 [0-9a-f]{64} but it records sha256"):
        read_manifest(store, "validated", BAD_DAY)
    code, _, err = run_cli(monkeypatch, capsys, "partitions", "--zone", "validated")
    assert code == 1 and "IntegrityError" in err and f"date={BAD_DAY}/manifest.json" in err
    state = train_flow(return_state=True)
    assert state.is_failed() and "manifest" in state.message and "corrupted" in state.message
    code, out, _ = run_cli(monkeypatch, capsys, "partitions", "--zone", "raw", "--json")
    assert code == 0 and json.loads(out) == []  # another zone lists fine
    _unaffected(store, settings, except_day=BAD_DAY)
    assert load_model(store, MODEL).version == 1


def test_flipped_byte_in_model_joblib_is_refused_before_unpickling_by_every_loader(damaged_env, monkeypatch, capsys):
    import joblib

    from mlcycle.flows.package import package_flow

    settings, store = damaged_env
    key = version_prefix(MODEL, 1) + "model.joblib"
    flip_byte(store, key)
    real_load = joblib.load
    monkeypatch.setattr(joblib, "load", lambda *a, **k: pytest.fail("damaged bytes were unpickled"))
    for ref in ("champion", 1):
        with pytest.raises(IntegrityError, match=r"model\.joblib is corrupted or was tampered with: sha256"):
            load_model(store, MODEL, ref)
    state = package_flow(return_state=True)  # packaging (and so serving and rollout) refuses it
    assert state.is_failed() and "IntegrityError" in state.message and "model.joblib" in state.message
    code, _, err = run_cli(monkeypatch, capsys, "package")
    assert code == 1 and "model.joblib is corrupted" in err
    monkeypatch.setattr(joblib, "load", real_load)
    assert load_metadata(store, MODEL, 1).version == 1  # the metadata is intact: only the model is refused
    _unaffected(store, settings)


def test_flipped_byte_in_model_metadata_is_refused_and_listed_as_damaged(damaged_env, monkeypatch, capsys):
    from mlcycle.flows.package import package_flow

    settings, store = damaged_env
    key = version_prefix(MODEL, 1) + "metadata.json"
    flip_byte(store, key)
    with pytest.raises(IntegrityError, match=r"metadata\.json is corrupted or was tampered with: sha256"):
        load_metadata(store, MODEL, 1)
    code, out, _ = run_cli(monkeypatch, capsys, "models", "list", "--json")
    assert code == 0
    (listed,) = json.loads(out)["versions"]
    assert listed["version"] == 1 and listed["status"].startswith("damaged:") and "metadata.json" in listed["status"]
    code, _, err = run_cli(monkeypatch, capsys, "models", "show", "1")
    assert code == 1 and "metadata.json is corrupted" in err
    state = package_flow(return_state=True)
    assert state.is_failed() and "metadata.json" in state.message
    _unaffected(store, settings)
