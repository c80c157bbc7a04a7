"""The ingest flows: one logical date, or a backfill over a range of dates.

``ingest`` (deployment ``ingest/<project>-daily``, scheduled in prefect.yaml)::

    date ─▶ ingest-raw ─▶ validate-partition ─▶ validation-artifact ─▶ publish-partition
                                                                         ├─ passed: validated/
                                                                         └─ failed: quarantine/ and the run fails

``backfill`` maps the same three tasks over every date of a range, updating a progress artifact
(``backfill-progress``) as tasks and dates finish; it completes every date before failing with the list of dates
that were quarantined or could not be ingested. The mapped tasks run in the subflow ``backfill-dates``,
on a thread pool of ``concurrency`` threads (``ingest.backfill_concurrency`` by default), or, with
``dask.address`` set, on that Dask cluster through a DaskTaskRunner (tasks/runners.py), whose workers
set the width. Each task gets the settings and a ``PartitionRef`` and reads its data from the store on
the worker, so the store ends up the same either way.
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from prefect import flow, get_run_logger, unmapped
from prefect.runtime import flow_run

from mlcycle.tasks.ingest import (
    ValidationFailed,
    date_outcome,
    ingest_raw_task,
    publish_task,
    raw_partition_task,
    validate_task,
    validation_artifact_task,
)
from mlcycle.tasks.records.data import BackfillReport, DateOutcome, PartitionManifest
from mlcycle.tasks.retry import retrying
from mlcycle.tasks.runners import dask_task_runner, settings_for_workers
from mlcycle.tasks.settings import get_settings
from mlcycle.tasks.sources import date_range, parse_date

PROGRESS_ARTIFACT = "backfill-progress"  # the progress bar of a backfill run, in the UI and in `mlcycle ingest`


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


@flow(name="backfill", log_prints=True)
def backfill_flow(start: str, end: str, source: str | None = None, concurrency: int | None = None,
                  replace: bool = False) -> BackfillReport:
    """Ingest every date from ``start`` to ``end`` (inclusive), ``concurrency`` tasks at a time."""
    from prefect.artifacts import create_progress_artifact, create_table_artifact
    from prefect.task_runners import ThreadPoolTaskRunner

    settings = get_settings()
    days = date_range(parse_date(start), parse_date(end))
    width = concurrency or settings.ingest.backfill_concurrency
    run_id = str(flow_run.id) if flow_run.id else None
    # A Dask cluster (dask.address) sets its own width; an unreachable scheduler fails here, before any work.
    runner = dask_task_runner(settings) or ThreadPoolTaskRunner(max_workers=width)
    progress_id = create_progress_artifact(progress=0.0, key=PROGRESS_ARTIFACT,
                                           description=f"backfill {days[0]}..{days[-1]}")
    outcomes = backfill_dates_flow.with_options(task_runner=runner)(start, end, source, run_id, replace, progress_id)

    report = BackfillReport(outcomes=sorted(outcomes, key=lambda o: o.date))
    create_table_artifact(
        key="backfill-validation", table=report.table(),
        description=f"validation verdict per date, {days[0]}..{days[-1]} (quarantined dates also get "
                    f"validation-<date> with every expectation)")
    if report.count("validated") != len(days):
        raise RuntimeError(f"backfill incomplete: {report.summary()}")
    print(f"backfill complete: {report.summary()}")
    return report


@flow(name="backfill-dates", log_prints=True)
def backfill_dates_flow(start: str, end: str, source: str | None, run_id: str | None, replace: bool,
                        progress_id: UUID) -> list[DateOutcome]:
    """The backfill's per-date tasks, mapped over the dates on the task runner ``backfill`` gives it.

    Each step's futures feed the next: a date's validation waits for its raw partition, its publication
    for its verdict. A thread pool runs tasks in the order they were mapped (every ingest, then every
    validation, then every publication), so the progress artifact counts finished tasks, not only
    finished dates; its description names the last date that finished and how. One outcome per date, in
    completion order.
    """
    from prefect.artifacts import update_progress_artifact
    from prefect.futures import as_completed

    settings = settings_for_workers(get_settings())
    days = date_range(parse_date(start), parse_date(end))
    ingest_raw, validate, publish = (retrying(t, settings.retries.ingest)
                                     for t in (ingest_raw_task, validate_task, publish_task))
    raws = ingest_raw.map(unmapped(settings), days, source, run_id, replace)
    checks = validate.map(unmapped(settings), raws)
    published = publish.map(unmapped(settings), checks, replace)

    steps = [*raws, *checks, *published]
    date_of = {future: i % len(days) for i, future in enumerate(steps)}
    outcomes: list[DateOutcome] = []
    for finished, done in enumerate(as_completed(steps), start=1):
        i, description = date_of[done], None
        if done is published[i]:  # the date's last step
            outcomes.append(date_outcome(days[i], raws[i], checks[i], done))
            if outcomes[-1].status == "quarantined":
                validation_artifact_task(checks[i].result())
            description = f"backfill {days[0]}..{days[-1]}, last: {days[i]} {outcomes[-1].status}"
        update_progress_artifact(progress_id, progress=100.0 * finished / len(steps), description=description)
    return outcomes
