"""Ingestion: fetch a day's batch, store it raw, validate it, publish it or quarantine it.

The plain functions here hold the logic; the ``@task`` wrappers at the bottom are what the flows in
``flows/ingest.py`` call. The path of one date::

    fetch_batch ─▶ write_raw (raw/, idempotent) ─▶ validate_raw (GX checkpoint, result + Data Docs
    uploaded to validation/) ─▶ publish: validated/ if it passed, quarantine/ if not

A backfill runs that path for every date of a range; :func:`date_outcome` says how each date ended.

Only object-store faults are retried (:class:`~tasks.storage.StoreUnavailable`, exponential backoff);
a bad batch, bad credentials or a conflict fail at once with a message naming the problem. Because
every write is idempotent and manifest-last, a retried or re-run date converges to the same store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mlcycle.tasks.batch import Batch
from mlcycle.tasks.landing import landing_zone
from mlcycle.tasks.partitions import (
    data_key,
    find_manifest,
    frame_to_parquet,
    read_manifest,
    read_partition,
    read_partition_bytes,
    write_partition,
)
from mlcycle.tasks.records.data import (
    DateOutcome,
    ExpectationRow,
    PartitionManifest,
    PartitionRef,
    SourceFileRecord,
    SourceRecord,
    ValidationOutcome,
    ValidationRecord,
)
from mlcycle.tasks.settings import Settings
from mlcycle.tasks.simulator import simulate_batch
from mlcycle.tasks.sources import chosen_source
from mlcycle.tasks.storage import MinioStore, ObjectStore, StoreError, browse_uri, open_store, sha256_bytes
from mlcycle.tasks.validation.runner import validate_frame
from mlcycle.tasks.validation.suite import suite_hash

if TYPE_CHECKING:
    from prefect.futures import PrefectFuture


class ValidationFailed(RuntimeError):
    """A batch failed validation and was quarantined; the message names the failed expectations."""


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------------------------------
# fetch
# --------------------------------------------------------------------------------------------------


def fetch_batch(settings: Settings, day: dt.date, source: str | None = None, rows: int | None = None) -> Batch:
    """The batch for ``day`` from the configured (or given) source, checked first (``chosen_source``).

    Landing files are shaped onto the declaration as ``ingest:`` says (column map, extra columns, generated
    ids and timestamps, canonical category texts: tasks/landing.py); what was done goes into the manifest.
    """
    if chosen_source(settings, source) == "simulator":
        return simulate_batch(day, settings.simulator, settings.dataset, rows=rows)
    zone = landing_zone(settings.landing_path, lambda bucket: MinioStore.from_settings(settings, bucket))
    return zone.fetch(day, settings.dataset, settings.ingest)


# --------------------------------------------------------------------------------------------------
# raw
# --------------------------------------------------------------------------------------------------


def write_raw(
    store: ObjectStore,
    settings: Settings,
    day: dt.date,
    batch: Batch,
    *,
    flow_run_id: str | None = None,
    replace: bool = False,
) -> PartitionManifest:
    """Store the batch under ``raw/date=day/``; identical data is a no-op (the first manifest stays)."""
    data, schema_hash = frame_to_parquet(batch.frame)
    digest = sha256_bytes(data)
    source = SourceRecord(
        kind=batch.kind,
        seed=settings.simulator.seed if batch.kind == "simulator" else None,
        files=[SourceFileRecord(name=f.name, sha256=f.sha256, bytes=f.bytes) for f in batch.files],
        notes=batch.notes,
        renamed=batch.renamed,
        dropped_columns=batch.dropped_columns,
        generated_ids=batch.generated_ids,
        timestamps_from_file_date=batch.timestamps_from_file_date,
    )
    manifest = PartitionManifest(
        dataset=settings.dataset.name,
        zone="raw",
        date=day,
        data_key=data_key("raw", day, digest),
        data_sha256=digest,
        data_bytes=len(data),
        rows=len(batch.frame),
        columns=[str(c) for c in batch.frame.columns],
        schema_hash=schema_hash,
        dataset_schema_hash=settings.dataset.schema_hash(),
        source=source,
        logical_date=day,
        ingested_at=now_utc(),
        flow_run_id=flow_run_id,
    )
    return write_partition(store, manifest, data, replace=replace)


# --------------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------------


def validation_id(data_sha256: str, suite_hash: str) -> str:
    """Same data under the same suite always maps to the same validation folder (idempotent)."""
    return hashlib.sha256(f"{data_sha256}:{suite_hash}".encode()).hexdigest()[:16]


def validate_raw(store: ObjectStore, settings: Settings, raw: PartitionRef) -> ValidationOutcome:
    """Run the GX checkpoint on a raw partition; store result JSON, Data Docs and the outcome.

    The validation folder is keyed by (data sha256, suite hash) and its ``outcome.json`` is written
    last: the same bytes under the same suite were already judged, so a re-run reuses that verdict
    instead of validating again (and leaves the store byte-identical). A folder without ``outcome.json``
    is an attempt that was interrupted (store outage, killed run): its Data Docs pages, named by GX
    after that attempt's run time, are removed before the outcome is written, so a retried or re-run
    validation leaves the same keys as one that never failed.
    """
    spec = settings.dataset
    vid = validation_id(raw.data_sha256, suite_hash(spec))
    prefix = f"validation/date={raw.date.isoformat()}/{vid}/"
    outcome_key = prefix + "outcome.json"
    if store.exists(outcome_key):
        previous = ValidationOutcome.model_validate_json(store.get_bytes(outcome_key))
        if previous.raw == raw:
            return previous

    leftovers = set(store.list(prefix + "docs/"))  # from an interrupted attempt (no outcome.json)
    written: set[str] = set()
    frame = read_partition(store, raw)
    with tempfile.TemporaryDirectory(prefix="mlcycle-docs-") as tmp:
        docs_dir = Path(tmp) / "docs" if settings.validation.build_data_docs else None
        report = validate_frame(
            frame, spec, result_format=settings.validation.result_format, docs_dir=docs_dir,
            batch_name=f"{spec.name}-{raw.date.isoformat()}",
        )
        del frame
        docs_key = None
        if docs_dir is not None and report.docs_index:
            # GX copies ~4 MB of fonts and images into static/ on every build, yet its pages take their
            # styles from CDNs and reference only a favicon there: upload the pages, not the copies.
            for path in sorted(p for p in docs_dir.rglob("*") if p.is_file()):
                relative = path.relative_to(docs_dir).as_posix()
                if not relative.startswith("static/"):
                    written.add(store.put_file(prefix + "docs/" + relative, path).key)
            docs_key = prefix + "docs/" + report.docs_index
    result_key = prefix + "result.json"
    store.put_bytes(result_key, json.dumps(report.result_json, indent=1, sort_keys=True, default=str).encode())
    record = ValidationRecord(
        success=report.success,
        suite_name=report.suite_name,
        suite_hash=report.suite_hash,
        evaluated=report.evaluated,
        failed=[_describe(o) for o in report.failed],
        result_key=result_key,
        docs_key=docs_key,
        validated_at=now_utc(),
    )
    rows = [ExpectationRow(expectation=o.expectation, column=o.column, success=o.success, details=o.details)
            for o in report.results]
    outcome = ValidationOutcome(
        raw=raw, record=record, rows=rows,
        summary=report.failure_summary() if not report.success else f"all {report.evaluated} expectations passed",
        docs_uri=browse_uri(store, docs_key) if docs_key else None,
    )
    for key in sorted(leftovers - written):
        store.delete(key)
    store.put_bytes(outcome_key, outcome.model_dump_json(indent=1).encode())
    return outcome


def _describe(outcome) -> str:
    column = f"{outcome.column}: " if outcome.column else ""
    return f"{column}{outcome.expectation} ({outcome.details})"


# --------------------------------------------------------------------------------------------------
# publish / quarantine
# --------------------------------------------------------------------------------------------------


def publish(store: ObjectStore, outcome: ValidationOutcome, *, replace: bool = False) -> PartitionManifest:
    """Copy the raw partition to validated/ (passed) or quarantine/ (failed), manifest last.

    A failed batch never touches ``validated/``. When a date already has a validated partition with
    different data, the new passing batch replaces it only with ``replace`` (the old one is kept
    under ``superseded/``).
    """
    raw_manifest = find_manifest(store, "raw", outcome.raw.date)
    if raw_manifest is None or raw_manifest.data_sha256 != outcome.raw.data_sha256:
        raise StoreError(f"raw partition for {outcome.raw.date} changed while it was being validated; re-run")
    zone = "validated" if outcome.record.success else "quarantine"
    data = read_partition_bytes(store, outcome.raw)
    manifest = raw_manifest.model_copy(update={
        "zone": zone,
        "data_key": data_key(zone, outcome.raw.date, outcome.raw.data_sha256),
        "validation": outcome.record,
    })
    # A quarantined date may be re-quarantined with a newer result: always keep the latest evidence.
    return write_partition(store, manifest, data, replace=replace or zone == "quarantine")


def ingest_date(
    settings: Settings,
    day: dt.date,
    *,
    source: str | None = None,
    flow_run_id: str | None = None,
    replace: bool = False,
) -> tuple[PartitionManifest, ValidationOutcome]:
    """The whole path for one date (fetch, validate, publish) as plain calls, without Prefect.

    Only the tests call it (``test_ingest``, ``test_bucket_policy``, ``test_projects``,
    ``test_landing_real_data``): it drives the same three steps the ``ingest`` flow runs as tasks, so the
    data path is checked without a Prefect server. The CLI goes through the flows; ``benchmarks/ingest_validate.py``
    times the steps one by one.
    """
    store = open_store(settings)
    raw = write_raw(store, settings, day, fetch_batch(settings, day, source), flow_run_id=flow_run_id,
                    replace=replace)
    outcome = validate_raw(store, settings, raw.ref())
    return publish(store, outcome, replace=replace), outcome


# --------------------------------------------------------------------------------------------------
# backfill
# --------------------------------------------------------------------------------------------------


def date_outcome(day: dt.date, raw: PrefectFuture, checked: PrefectFuture, published: PrefectFuture) -> DateOutcome:
    """Classify one date of a backfill from the futures of its three steps (ingest, validate, publish).

    A date is ``failed`` at the first step that raised (the detail names the step and the error; the
    steps after it never ran, so their futures are not read), else ``validated`` or ``quarantined`` by
    the validation verdict, with the manifest that publish wrote.
    """
    values = []
    for step, future in (("ingest", raw), ("validate", checked), ("publish", published)):
        value = future.result(raise_on_failure=False)
        if isinstance(value, BaseException):
            return DateOutcome(date=day, status="failed", detail=f"{step}: {value}")
        values.append(value)
    _, outcome, manifest = values
    if outcome.record.success:
        return DateOutcome(date=day, status="validated", detail=f"{outcome.raw.rows} rows", manifest=manifest)
    return DateOutcome(date=day, status="quarantined", detail=outcome.summary, manifest=manifest)


# --------------------------------------------------------------------------------------------------
# Prefect tasks: thin wrappers, retried only on transient store faults
# --------------------------------------------------------------------------------------------------

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402


@task(name="ingest-raw", cache_policy=NO_CACHE, task_run_name="ingest-raw-{day}")
def ingest_raw_task(settings: Settings, day: dt.date, source: str | None = None, flow_run_id: str | None = None,
                    replace: bool = False) -> PartitionRef:
    batch = fetch_batch(settings, day, source)
    return write_raw(open_store(settings), settings, day, batch, flow_run_id=flow_run_id, replace=replace).ref()


@task(name="raw-partition", cache_policy=NO_CACHE, task_run_name="raw-partition-{day}")
def raw_partition_task(settings: Settings, day: dt.date) -> PartitionRef:
    return read_manifest(open_store(settings), "raw", day).ref()


@task(name="validate-partition", cache_policy=NO_CACHE, task_run_name="validate-{raw.date}")
def validate_task(settings: Settings, raw: PartitionRef) -> ValidationOutcome:
    return validate_raw(open_store(settings), settings, raw)


@task(name="publish-partition", cache_policy=NO_CACHE, task_run_name="publish-{outcome.raw.date}")
def publish_task(settings: Settings, outcome: ValidationOutcome, replace: bool = False) -> PartitionManifest:
    return publish(open_store(settings), outcome, replace=replace)


@task(name="validation-artifact", cache_policy=NO_CACHE)
def validation_artifact_task(outcome: ValidationOutcome) -> None:
    """A table of every expectation and a markdown verdict with the Data Docs link, in the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    day = outcome.raw.date.isoformat()
    create_table_artifact(
        key=f"validation-{day}",
        table=[row.model_dump() for row in outcome.rows],
        description=f"Great Expectations results for {day}",
    )
    verdict = "PASSED: published to `validated/`" if outcome.record.success else "FAILED: quarantined"
    failed = "\n".join(f"- {line}" for line in outcome.record.failed) or "- none"
    docs = f"[Data Docs]({outcome.docs_uri})" if outcome.docs_uri else "Data Docs not built"
    create_markdown_artifact(
        key=f"validation-verdict-{day}",
        markdown=(f"# Validation of {day}: {verdict}\n\n{outcome.summary}\n\n"
                  f"**Failed expectations**\n{failed}\n\n{docs} · result: `{outcome.record.result_key}` · "
                  f"suite `{outcome.record.suite_name}` ({outcome.record.suite_hash[:12]})\n"),
        description=f"validation verdict for {day}",
    )
