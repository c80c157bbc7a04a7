"""The data stage's records: partitions and their manifests, validation verdicts, backfill outcomes.

What crosses the data rooms (``tasks/partitions.py``, ``tasks/ingest.py``, ``tasks/validation/``,
``flows/ingest.py``) and the stages after them: a :class:`PartitionRef` is what tasks pass each other
(key, sha256, rows: never a DataFrame), a :class:`PartitionManifest` is what the store keeps beside a
partition's data, a :class:`ValidationReport` is Great Expectations' verdict in plain terms, and a
:class:`BackfillReport` is what ``mlcycle ingest --start/--end --json`` prints, an :class:`InitReport` what
``mlcycle init --json`` prints.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

Zone = Literal["raw", "validated", "quarantine"]


# --------------------------------------------------------------------------------------------------
# Partitions
# --------------------------------------------------------------------------------------------------


class SourceFileRecord(BaseModel):
    name: str
    sha256: str
    bytes: int


class SourceRecord(BaseModel):
    """Where a partition's rows came from, and what ingest did to the landing columns (``ingest.*``)."""

    kind: str
    seed: int | None = None
    files: list[SourceFileRecord] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    renamed: dict[str, str] = Field(default_factory=dict)  # landing column name -> declared name
    dropped_columns: list[str] = Field(default_factory=list)  # extra columns dropped (extra_columns: ignore)
    generated_ids: bool = False  # the id column was generated (ids: generate), not read
    timestamps_from_file_date: bool = False  # the timestamp column is the file's date (timestamps: file_date)


class ValidationRecord(BaseModel):
    """What validation concluded about a partition (attached to validated/quarantine manifests)."""

    success: bool
    suite_name: str
    suite_hash: str
    evaluated: int
    failed: list[str] = Field(default_factory=list)  # one line per failed expectation
    result_key: str
    docs_key: str | None = None
    validated_at: dt.datetime


class PartitionManifest(BaseModel):
    dataset: str
    zone: Zone
    date: dt.date
    data_key: str
    data_sha256: str
    data_bytes: int
    rows: int
    columns: list[str]
    schema_hash: str  # of the Parquet (Arrow) schema actually stored
    dataset_schema_hash: str  # of the dataset declaration in force when it was written
    source: SourceRecord
    logical_date: dt.date
    ingested_at: dt.datetime
    flow_run_id: str | None = None
    validation: ValidationRecord | None = None

    def ref(self) -> PartitionRef:
        return PartitionRef(zone=self.zone, date=self.date, data_key=self.data_key,
                            data_sha256=self.data_sha256, rows=self.rows)


class PartitionRef(BaseModel):
    """A small, typed pointer to a partition's data: what tasks pass to each other."""

    zone: Zone
    date: dt.date
    data_key: str
    data_sha256: str
    rows: int


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


class ExpectationOutcome(BaseModel):
    """One expectation's verdict in plain terms: what was expected, what was seen, a few offenders."""

    expectation: str
    column: str | None
    success: bool
    details: str
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list = []
    exception: str | None = None


class ValidationReport(BaseModel):
    """The verdict on one batch: what the ingest flow publishes or quarantines on, and stores.

    ``result_json`` is GX's own validation result (JSON-safe), kept so the evidence can be stored next
    to the partition and re-rendered later; ``results`` and ``failed`` are the same verdicts, typed and
    phrased for logs, artifacts and alerts. ``docs_index`` is relative to ``docs_dir``, so the folder
    can be uploaded anywhere and the link still resolves.
    """

    success: bool
    suite_name: str
    suite_hash: str
    evaluated: int
    failed: list[ExpectationOutcome]
    results: list[ExpectationOutcome]
    result_json: dict
    docs_dir: Path | None = None
    docs_index: str | None = None

    def failure_summary(self) -> str:
        """One line naming every failed expectation and its column, column-set problems first."""
        if self.success:
            return f"all {self.evaluated} expectations passed"
        parts = [f"{o.column or 'table'}: {o.expectation} ({o.details})" for o in self.failed]
        return f"{len(self.failed)} of {self.evaluated} expectations failed: " + "; ".join(parts)


class ExpectationRow(BaseModel):
    expectation: str
    column: str | None
    success: bool
    details: str


class ValidationOutcome(BaseModel):
    """What validate_raw hands to publish: the raw partition, the verdict, and its evidence."""

    raw: PartitionRef
    record: ValidationRecord
    rows: list[ExpectationRow]
    docs_uri: str | None
    summary: str


# --------------------------------------------------------------------------------------------------
# Backfill
# --------------------------------------------------------------------------------------------------


class DateOutcome(BaseModel):
    date: dt.date
    status: str  # validated | quarantined | failed
    detail: str
    manifest: PartitionManifest | None = None


class BackfillReport(BaseModel):
    outcomes: list[DateOutcome]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def summary(self) -> str:
        bad = [f"{o.date} {o.status}: {o.detail}" for o in self.outcomes if o.status != "validated"]
        head = (f"{self.count('validated')} validated, {self.count('quarantined')} quarantined, "
                f"{self.count('failed')} failed of {len(self.outcomes)} dates")
        return head + ("; " + "; ".join(bad) if bad else "")

    def table(self) -> list[dict[str, str]]:
        """One row per date (date, verdict, detail): the backfill's table artifact."""
        return [{"date": o.date.isoformat(), "verdict": o.status, "detail": o.detail} for o in self.outcomes]


# --------------------------------------------------------------------------------------------------
# mlcycle init
# --------------------------------------------------------------------------------------------------


class InitDecision(BaseModel):
    """One guess ``mlcycle init`` made from the profiled file, and why (printed one per line)."""

    subject: str  # a column, or a key of the config (dataset.task, ingest.ids, ...)
    choice: str
    reason: str

    def line(self) -> str:
        return f"{self.subject}: {self.choice} ({self.reason})"


class InitReport(BaseModel):
    """What ``mlcycle init --json`` prints: the config written, and every decision behind it."""

    config: str  # the file written
    source: str  # the profiled file
    rows: int
    dataset: str
    task: str
    target: str
    decisions: list[InitDecision]
