"""Ingestion logic on both store backends: idempotency, concurrency, quarantine, bad input."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import numpy as np
import pytest

from mlcycle.tasks.ingest import ingest_date, publish, validate_raw, write_raw
from mlcycle.tasks.partitions import PartitionNotFound, list_partitions, read_manifest, read_partition
from mlcycle.tasks.simulator import simulate_batch
from mlcycle.tasks.sources import SourceError

DAY = dt.date(2026, 10, 2)


def snapshot(store) -> dict[str, bytes]:
    return {key: store.get_bytes(key) for key in store.list("")}


@pytest.fixture
def small(backend_settings):
    """Small batches keep these tests fast; the validation suite requires >= 100 rows."""
    return backend_settings.model_copy(update={
        "simulator": backend_settings.simulator.model_copy(update={"rows_per_day": 300})})


def test_ingest_publishes_a_valid_batch_to_validated(small):
    manifest, outcome = ingest_date(small, DAY)
    assert manifest.zone == "validated" and manifest.rows == 300
    assert outcome.record.success and outcome.record.failed == []
    from mlcycle.tasks.storage import open_store

    store = open_store(small)
    assert list_partitions(store, "validated") == [DAY]
    assert list_partitions(store, "quarantine") == []
    assert store.exists(outcome.record.result_key)
    assert outcome.record.docs_key and store.exists(outcome.record.docs_key)


def test_reingesting_a_date_is_byte_identical(small):
    from mlcycle.tasks.storage import open_store

    first, _ = ingest_date(small, DAY)
    before = snapshot(open_store(small))
    second, _ = ingest_date(small, DAY)
    after = snapshot(open_store(small))
    assert second == first
    assert after == before
    assert sum(k.endswith("manifest.json") and k.startswith("validated/") for k in after) == 1


def test_concurrent_ingest_of_one_date_ends_with_one_consistent_partition(small):
    from mlcycle.tasks.storage import open_store

    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        try:
            barrier.wait()
            ingest_date(small, DAY)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = open_store(small)
    for zone in ("raw", "validated"):
        assert list_partitions(store, zone) == [DAY]
        manifest = read_manifest(store, zone, DAY)
        assert len(read_partition(store, manifest.ref())) == 300  # manifest and data agree
        assert [k for k in store.list(f"{zone}/date={DAY}/") if k.endswith(".parquet")] == [manifest.data_key]


# ---------------------------------------------------------------------------------------------------
# bad batches arrive through the landing zone, as in production
# ---------------------------------------------------------------------------------------------------


def _good_frame(settings, rows=300, day=DAY):
    sim = settings.simulator.model_copy(update={"rows_per_day": rows})
    return simulate_batch(day, sim, settings.dataset).frame


def _landing(settings, tmp_path: Path, frame, fmt="parquet", day=DAY):
    folder = tmp_path / "landing"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*"):
        old.unlink()
    path = folder / f"loans_date={day}.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return settings.model_copy(update={"landing_path": str(folder)})


def _spoil(kind: str, frame):
    frame = frame.copy()
    if kind == "missing_column":
        return frame.drop(columns=["credit_score"]), "credit_score"
    if kind == "extra_column":
        frame["favourite_colour"] = "blue"
        return frame, "favourite_colour"
    if kind == "wrong_type":
        frame["age"] = frame["age"].astype(str)
        frame.loc[3, "age"] = "forty"
        return frame, "age"
    if kind == "out_of_range":
        frame.loc[5, "debt_ratio"] = 42.0
        return frame, "debt_ratio"
    if kind == "unknown_category":
        frame.loc[7, "region"] = "atlantis"
        return frame, "region"
    if kind == "null_not_allowed":
        frame["credit_score"] = frame["credit_score"].astype(float)
        frame.loc[9, "credit_score"] = np.nan
        return frame, "credit_score"
    if kind == "duplicate_ids":
        frame.loc[11, "application_id"] = frame.loc[10, "application_id"]
        return frame, "application_id"
    if kind == "too_few_rows":
        return frame.iloc[:20], "row"
    raise AssertionError(kind)


BAD_KINDS = ["missing_column", "extra_column", "wrong_type", "out_of_range", "unknown_category",
             "null_not_allowed", "duplicate_ids", "too_few_rows"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_batch_is_quarantined_naming_the_problem(small, tmp_path, kind):
    from mlcycle.tasks.storage import open_store

    if kind == "extra_column":  # by default an extra column is dropped (next test); here it quarantines
        small = small.model_copy(update={"ingest": small.ingest.model_copy(update={"extra_columns": "quarantine"})})
    frame, column = _spoil(kind, _good_frame(small))
    settings = _landing(small, tmp_path, frame, fmt="csv" if kind == "wrong_type" else "parquet")
    manifest, outcome = ingest_date(settings, DAY, source="landing")
    assert manifest.zone == "quarantine"
    assert not outcome.record.success
    assert column in outcome.summary, outcome.summary
    store = open_store(settings)
    assert list_partitions(store, "validated") == []
    assert list_partitions(store, "quarantine") == [DAY]
    assert manifest.validation is not None and manifest.validation.failed
    assert manifest.source.files[0].name == f"loans_date={DAY}.{'csv' if kind == 'wrong_type' else 'parquet'}"


def test_extra_column_is_dropped_by_default_and_named_in_the_manifest(small, tmp_path):
    frame, column = _spoil("extra_column", _good_frame(small))
    manifest, outcome = ingest_date(_landing(small, tmp_path, frame), DAY, source="landing")
    assert manifest.zone == "validated", outcome.summary
    assert manifest.source.dropped_columns == [column] and column not in manifest.columns
    assert any(column in note and "ignore" in note for note in manifest.source.notes)


def test_quarantine_leaves_validated_untouched(small, tmp_path):
    """A corrected-then-broken re-delivery for a validated date never changes validated/."""
    from mlcycle.tasks.storage import open_store

    good = _landing(small, tmp_path, _good_frame(small))
    ingest_date(good, DAY, source="landing")
    store = open_store(good)
    validated_before = {k: v for k, v in snapshot(store).items() if k.startswith("validated/")}

    bad_frame, _ = _spoil("out_of_range", _good_frame(small))
    bad = _landing(small, tmp_path, bad_frame)
    manifest, outcome = ingest_date(bad, DAY, source="landing", replace=True)
    assert manifest.zone == "quarantine" and "debt_ratio" in outcome.summary
    validated_after = {k: v for k, v in snapshot(store).items() if k.startswith("validated/")}
    assert validated_after == validated_before
    # the superseded raw batch is still on record
    assert store.list(f"superseded/raw/date={DAY}/")


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"application_id,applied_at\n", "has no rows"),
])
def test_unreadable_landing_file_fails_and_writes_nothing(small, tmp_path, content, message):
    from mlcycle.tasks.storage import open_store

    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / f"date={DAY}.csv").write_bytes(content)
    settings = small.model_copy(update={"landing_path": str(folder)})
    with pytest.raises(SourceError, match=message):
        ingest_date(settings, DAY, source="landing")
    assert open_store(settings).list("") == []


def test_corrupted_parquet_in_landing_fails_naming_the_file(small, tmp_path):
    settings = _landing(small, tmp_path, _good_frame(small))
    path = next((tmp_path / "landing").glob("*.parquet"))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(SourceError, match=rf"loans_date={DAY}.parquet' is truncated or not valid Parquet"):
        ingest_date(settings, DAY, source="landing")


def test_date_with_no_data_names_the_date(small, tmp_path):
    settings = _landing(small, tmp_path, _good_frame(small))
    other = DAY + dt.timedelta(days=1)
    with pytest.raises(SourceError, match=f"no data for {other}"):
        ingest_date(settings, other, source="landing")


def test_revalidating_unknown_date_is_partition_not_found(small):
    from mlcycle.tasks.partitions import read_manifest
    from mlcycle.tasks.storage import open_store

    with pytest.raises(PartitionNotFound, match="no raw partition"):
        read_manifest(open_store(small), "raw", DAY)


def test_validation_is_reused_for_identical_data_and_suite(small):
    from mlcycle.tasks.storage import open_store

    store = open_store(small)
    raw = write_raw(store, small, DAY, simulate_batch(DAY, small.simulator, small.dataset))
    first = validate_raw(store, small, raw.ref())
    keys = store.list("validation/")
    second = validate_raw(store, small, raw.ref())
    assert second == first and store.list("validation/") == keys
    assert publish(store, second).zone == "validated"
