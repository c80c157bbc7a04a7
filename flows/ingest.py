"""The ingest flows: one logical date, or a backfill over a range of dates.

``ingest`` (deployment ``ingest/daily``, scheduled in prefect.yaml)::

    date ─▶ ingest-raw ─▶ validate-partition ─▶ validation-artifact ─▶ publish-partition
                                                                         ├─ passed: validated/
                                                                         └─ failed: quarantine/ and the run fails

``backfill`` runs the same three tasks for every date of a range, at most ``concurrency`` dates at a
time, updating a progress artifact as dates finish; it completes every date before failing with the
list of dates that were quarantined or could not be ingested. The tasks run on the flow's thread pool,
or, with ``dask.address`` set, on that Dask cluster: the subflow ``backfill-dates`` with a DaskTaskRunner
(tasks/runners.py). Each task gets the settings and a ``PartitionRef`` and reads its data from the store
on the worker, so the store ends up the same either way.
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import BaseModel

from mlcycle.tasks.ingest import (
    ValidationFailed,
    ingest_raw_task,
    progress_listeners,
    publish_task,
    raw_partition_task,
    validate_task,
    validation_artifact_task,
)
from mlcycle.tasks.partitions import PartitionManifest
from mlcycle.tasks.retry import retrying
from mlcycle.tasks.runners import dask_task_runner, settings_for_workers
from mlcycle.tasks.settings import Settings, get_settings
from mlcycle.tasks.sources import date_range, parse_date


def logical_date(date: str | None) -> dt.date:
    """The date parameter, else the date the run was scheduled for (today for an ad-hoc run)."""
    if date:
        return parse_date(date)
    scheduled = flow_run.get_scheduled_start_time()
    return scheduled.date() if scheduled else dt.datetime.now(dt.UTC).date()


@flow(name="ingest", log_prints=True)
def ingest_flow(date: str | None = None, source: str | None = None, replace: bool = False) -> PartitionManifest:
    """Ingest and validate one day's batch; fails (after quarantining it) if validation fails.

    Args:
        date: logical date YYYY-MM-DD; defaults to the scheduled date of the run.
        source: ``simulator`` or ``landing``; defaults to ``ingest.source`` in mlcycle.yaml.
        replace: supersede a partition that already holds different data for this date.
    """
    settings = get_settings()
    day = logical_date(date)
    run_id = str(flow_run.id) if flow_run.id else None

    raw = retrying(ingest_raw_task, settings.retries.ingest)(settings, day, source, run_id, replace)
    return _validate_and_publish(settings, raw, replace)


@flow(name="validate", log_prints=True)
def validate_flow(date: str, replace: bool = False) -> PartitionManifest:
    """Re-validate the raw partition of ``date`` (e.g. after the dataset declaration changed)."""
    settings = get_settings()
    raw = retrying(raw_partition_task, settings.retries.ingest)(settings, parse_date(date))
    return _validate_and_publish(settings, raw, replace)


def _validate_and_publish(settings, raw, replace: bool) -> PartitionManifest:
    """The shared tail of both flows: validate, show the verdict, publish or quarantine."""
    outcome = retrying(validate_task, settings.retries.ingest)(settings, raw)
    validation_artifact_task(outcome)
    manifest = retrying(publish_task, settings.retries.ingest)(settings, outcome, replace)
    if not outcome.record.success:
        raise ValidationFailed(f"{raw.date}: batch quarantined, {outcome.summary}")
    get_run_logger().info("%s: %d rows validated -> %s", raw.date, manifest.rows, manifest.data_key)
    return manifest


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


@flow(name="backfill", log_prints=True)
def backfill_flow(start: str, end: str, source: str | None = None, concurrency: int | None = None,
                  replace: bool = False) -> BackfillReport:
    """Ingest every date from ``start`` to ``end`` (inclusive), ``concurrency`` dates at a time."""
    from prefect.artifacts import create_progress_artifact, create_table_artifact

    settings = get_settings()
    days = date_range(parse_date(start), parse_date(end))
    width = concurrency or settings.ingest.backfill_concurrency
    run_id = str(flow_run.id) if flow_run.id else None
    runner = dask_task_runner(settings)  # None without dask.address; an unreachable scheduler fails here
    progress_id = create_progress_artifact(progress=0.0, key="backfill-progress",
                                           description=f"backfill {days[0]}..{days[-1]}")
    if runner is None:
        outcomes = _ingest_dates(settings, days, source, width, run_id, replace, progress_id)
    else:
        outcomes = backfill_dates_flow.with_options(task_runner=runner)(start, end, source, width, run_id, replace,
                                                                        progress_id)

    report = BackfillReport(outcomes=sorted(outcomes, key=lambda o: o.date))
    create_table_artifact(
        key="backfill-validation", table=[{"date": o.date.isoformat(), "verdict": o.status, "detail": o.detail}
                                          for o in report.outcomes],
        description=f"validation verdict per date, {days[0]}..{days[-1]} (quarantined dates also get "
                    f"validation-<date> with every expectation)")
    if report.count("validated") != len(days):
        raise RuntimeError(f"backfill incomplete: {report.summary()}")
    print(f"backfill complete: {report.summary()}")
    return report


@flow(name="backfill-dates", log_prints=True)
def backfill_dates_flow(start: str, end: str, source: str | None, width: int, run_id: str | None, replace: bool,
                        progress_id: UUID) -> list[DateOutcome]:
    """The backfill's per-date tasks; ``backfill`` runs this subflow with the Dask task runner."""
    settings = settings_for_workers(get_settings())
    days = date_range(parse_date(start), parse_date(end))
    return _ingest_dates(settings, days, source, width, run_id, replace, progress_id)


def _ingest_dates(settings: Settings, days: list[dt.date], source: str | None, width: int, run_id: str | None,
                  replace: bool, progress_id: UUID) -> list[DateOutcome]:
    """Submit ingest -> validate -> publish for each date, at most ``width`` dates in flight, on the
    current flow's task runner; one outcome per date, in completion order."""
    from prefect.artifacts import update_progress_artifact
    from prefect.futures import as_completed

    ingest_raw, validate, publish = (retrying(t, settings.retries.ingest)
                                     for t in (ingest_raw_task, validate_task, publish_task))
    pending = list(days)
    in_flight: dict = {}  # final future of each date -> (date, raw future, validation future)
    outcomes: list[DateOutcome] = []
    while pending or in_flight:
        while pending and len(in_flight) < width:
            day = pending.pop(0)
            raw = ingest_raw.submit(settings, day, source, run_id, replace)
            checked = validate.submit(settings, raw)
            published = publish.submit(settings, checked, replace)
            in_flight[published] = (day, raw, checked)
        done = next(as_completed(list(in_flight)))
        day, raw, checked = in_flight.pop(done)
        outcomes.append(_date_outcome(day, raw, checked, done))
        update_progress_artifact(progress_id, progress=100.0 * len(outcomes) / len(days))
        for listener in progress_listeners:
            listener(len(outcomes), len(days), day, outcomes[-1].status)
    return outcomes


def _date_outcome(day: dt.date, raw, checked, published) -> DateOutcome:
    """Classify one date from its three futures, naming the first step that failed."""
    values = []
    for step, future in (("ingest", raw), ("validate", checked), ("publish", published)):
        value = future.result(raise_on_failure=False)
        if isinstance(value, BaseException):
            return DateOutcome(date=day, status="failed", detail=f"{step}: {value}")
        values.append(value)
    _, outcome, manifest = values
    if outcome.record.success:
        return DateOutcome(date=day, status="validated", detail=f"{outcome.raw.rows} rows", manifest=manifest)
    validation_artifact_task(outcome)
    return DateOutcome(date=day, status="quarantined", detail=outcome.summary, manifest=manifest)
