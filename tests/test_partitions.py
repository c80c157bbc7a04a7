"""Partitions: manifest-last visibility, verified reads, idempotent writes, conflicts that lose nothing."""

from __future__ import annotations

import datetime as dt

import pytest

from mlcycle.tasks.ingest import write_raw
from mlcycle.tasks.partitions import (
    PartitionConflict,
    PartitionNotFound,
    data_key,
    frame_to_parquet,
    list_partitions,
    manifest_key,
    read_manifest,
    read_partition,
)
from mlcycle.tasks.simulator import simulate_batch
from mlcycle.tasks.storage import IntegrityError

DAY = dt.date(2026, 10, 3)


def _batch(settings, day=DAY, seed=None):
    sim = settings.simulator.model_copy(update={"rows_per_day": 400, **({"seed": seed} if seed else {})})
    return simulate_batch(day, sim, settings.dataset)


def test_parquet_bytes_are_deterministic(settings):
    frame = _batch(settings).frame
    assert frame_to_parquet(frame)[0] == frame_to_parquet(frame.copy())[0]


def test_written_partition_reads_back_verified(store, backend_settings):
    manifest = write_raw(store, backend_settings, DAY, _batch(backend_settings))
    assert manifest.rows == 400 and manifest.columns == backend_settings.dataset.columns
    assert manifest.dataset_schema_hash == backend_settings.dataset.schema_hash()
    frame = read_partition(store, manifest.ref())
    assert len(frame) == 400
    assert list_partitions(store, "raw") == [DAY]


def test_rewriting_identical_data_is_a_no_op_keeping_the_first_manifest(store, backend_settings):
    first = write_raw(store, backend_settings, DAY, _batch(backend_settings))
    before = {k: store.get_bytes(k) for k in store.list("raw/")}
    second = write_raw(store, backend_settings, DAY, _batch(backend_settings))
    after = {k: store.get_bytes(k) for k in store.list("raw/")}
    assert second == first
    assert before == after  # byte-identical, one partition


def test_different_data_for_same_date_is_refused_and_nothing_is_lost(store, backend_settings):
    first = write_raw(store, backend_settings, DAY, _batch(backend_settings))
    with pytest.raises(PartitionConflict, match=rf"raw/date={DAY} already holds a different batch"):
        write_raw(store, backend_settings, DAY, _batch(backend_settings, seed=99))
    assert read_manifest(store, "raw", DAY) == first
    assert len(read_partition(store, first.ref())) == 400


def test_replace_supersedes_keeping_the_old_batch_readable(store, backend_settings):
    first = write_raw(store, backend_settings, DAY, _batch(backend_settings))
    second = write_raw(store, backend_settings, DAY, _batch(backend_settings, seed=99), replace=True)
    assert read_manifest(store, "raw", DAY).data_sha256 == second.data_sha256
    kept = store.list(f"superseded/raw/date={DAY}/")
    assert kept == [f"superseded/raw/date={DAY}/{first.data_sha256[:12]}/manifest.json"]
    assert len(read_partition(store, first.ref())) == 400  # old data still where its manifest says


def test_data_without_manifest_is_not_a_partition(store, backend_settings):
    """A crash after the data write and before the manifest leaves nothing visible."""
    data, _ = frame_to_parquet(_batch(backend_settings).frame)
    store.put_bytes(data_key("raw", DAY, "0" * 64), data)
    assert list_partitions(store, "raw") == []
    with pytest.raises(PartitionNotFound, match=f"no raw partition for {DAY}"):
        read_manifest(store, "raw", DAY)


def test_flipped_byte_in_data_is_detected(store, backend_settings):
    manifest = write_raw(store, backend_settings, DAY, _batch(backend_settings))
    data = bytearray(store.get_bytes(manifest.data_key))
    data[len(data) // 2] ^= 0x01
    store.put_bytes(manifest.data_key, bytes(data))
    with pytest.raises(IntegrityError, match="corrupted or was tampered with"):
        read_partition(store, manifest.ref())


def test_corrupted_manifest_is_detected_and_a_rewrite_repairs_it(store, backend_settings):
    write_raw(store, backend_settings, DAY, _batch(backend_settings))
    store.put_bytes(manifest_key("raw", DAY), b'{"dataset": "loans", "zone": "raw"')
    with pytest.raises(IntegrityError, match="manifest .* is corrupted"):
        read_manifest(store, "raw", DAY)
    repaired = write_raw(store, backend_settings, DAY, _batch(backend_settings))
    assert read_manifest(store, "raw", DAY) == repaired


def test_corrupted_data_under_a_good_manifest_is_repaired_by_a_rewrite(store, backend_settings):
    manifest = write_raw(store, backend_settings, DAY, _batch(backend_settings))
    store.put_bytes(manifest.data_key, b"garbage")
    write_raw(store, backend_settings, DAY, _batch(backend_settings))
    assert len(read_partition(store, manifest.ref())) == 400
