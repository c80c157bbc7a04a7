"""The demo's own steps (flows/demo.py): its traffic, and the two waits between the life cycle's stages.

* :func:`traffic_phases` picks the days the demo sends. On the simulator (the embedded defaults): four
  simulated days before the first drift date, then four from it on. On any other declaration (ingested
  from the landing zone): the user's own rows, the last four days the demo ingested (the champion's test
  window), sent once: the monitor sees the live traffic of the model's own data. :func:`send_traffic`
  posts them through the endpoint (tasks.traffic: simulated rows, or the stored validated partitions) and
  fails when any request failed.
* :func:`wait_for_logged_rows` waits until the inference log holds the rows just sent: the service
  writes its log in parts on a timer (``serving.inference_log.flush_interval_seconds``), and the
  monitor must not look at the window before they are there. Bounded by
  ``demo.inference_log_timeout_seconds``.
* :func:`wait_until_live` waits until a model version serves behind the stable endpoint, which the
  promotion's rollout run (started on the worker by the training flow) makes so; it fails as soon as
  that run ends without completing, with the run's own message, and after
  ``demo.rollout_timeout_seconds`` otherwise.

The Prefect tasks at the bottom open the store and the Prefect client; the functions take them.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE

from mlcycle.tasks.records.demo import DemoChampion, MonitorPhase
from mlcycle.tasks.records.rollout import Deployment
from mlcycle.tasks.rollout.orchestrate import read_current
from mlcycle.tasks.settings import Settings
from mlcycle.tasks.storage import ObjectStore, open_store

TRAFFIC_ROWS_PER_DAY = 300


def simulated(settings: Settings) -> bool:
    """Whether the demo runs on the simulator (its drift schedule, its traffic) or on the user's own rows."""
    return settings.ingest.source == "simulator"


def traffic_phases(settings: Settings) -> list[tuple[str, list[dt.date]]]:
    """(label, days) of the demo's traffic: on the simulator the four days before the first drift date,
    then four from it; on the user's own data the last (up to) four days the demo ingested."""
    if not simulated(settings):
        last = settings.demo.start + dt.timedelta(days=settings.demo.days - 1)
        days = [last - dt.timedelta(days=i) for i in range(min(4, settings.demo.days) - 1, -1, -1)]
        return [("the latest stored days", days)]
    drift_dates = sorted({e.start for e in settings.simulator.drift})
    first_drift = drift_dates[0] if drift_dates else settings.demo.start + dt.timedelta(days=30)
    return [("before the drift date", [first_drift - dt.timedelta(days=i) for i in (4, 3, 2, 1)]),
            ("after the drift date", [first_drift + dt.timedelta(days=i) for i in (0, 1, 2, 3)])]


def catch_up_range(settings: Settings, last_served: dt.date) -> tuple[dt.date, dt.date] | None:
    """The days after the demo's backfill up to ``last_served``, as the daily ingest would have ingested
    them by then (None when there are none): the retraining the monitor triggers then learns from the
    drifted days; with only the champion's own days it could never beat the champion at the gate. On the
    user's own data the demo sends only days it ingested: None."""
    if not simulated(settings):
        return None
    first = settings.demo.start + dt.timedelta(days=settings.demo.days)
    return (first, last_served) if first <= last_served else None


def send_traffic(settings: Settings, store: ObjectStore, url: str, days: list[dt.date]) -> dict[str, int]:
    """POST the rows of ``days`` to the endpoint (simulated applications, or the stored validated rows of
    the user's own data); every request must be answered."""
    from mlcycle.tasks.traffic import send_http, send_stored

    if simulated(settings):
        sent = send_http(url, settings, days, rows_per_day=TRAFFIC_ROWS_PER_DAY)
    else:
        sent = send_stored(url, settings, store, days)
    if sent["failed"]:
        raise RuntimeError(f"{sent['failed']} of {sent['requests']} demo requests failed at {url}")
    return sent


def logged_rows_since(store: ObjectStore, since: dt.datetime) -> int:
    """Rows of the inference log stamped at or after ``since`` (UTC), reading only their ``ts`` column."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from mlcycle.tasks.inference_log import INFERENCE_PREFIX
    from mlcycle.tasks.inference_reader import list_parts

    since = since.astimezone(dt.UTC)
    today = dt.datetime.now(dt.UTC).date()
    days = [since.date() + dt.timedelta(days=i) for i in range((today - since.date()).days + 1)]
    rows = 0
    for key in list_parts(store, INFERENCE_PREFIX, days):
        ts = pq.read_table(io.BytesIO(store.get_bytes(key)), columns=["ts"]).column("ts")
        rows += pc.sum(pc.greater_equal(ts, pa.scalar(since, type=ts.type))).as_py() or 0
    return rows


def wait_for_logged_rows(store: ObjectStore, since: dt.datetime, rows: int, timeout_seconds: float,
                         poll_seconds: float = 0.5) -> int:
    """Wait until the inference log holds ``rows`` rows stamped since ``since``; returns how many it holds.

    Raises TimeoutError naming the rows it waited for and how many arrived after ``timeout_seconds``.
    """
    deadline = time.monotonic() + timeout_seconds
    while (logged := logged_rows_since(store, since)) < rows:
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"the inference log in {store.description} held {logged} of the {rows} rows sent since "
                f"{since:%H:%M:%S} UTC after {timeout_seconds:g} s (demo.inference_log_timeout_seconds); the "
                "service writes its log every serving.inference_log.flush_interval_seconds, if "
                "serving.inference_log.enabled")
        time.sleep(poll_seconds)
    return logged


def rollout_deployment_id(client, name: str) -> UUID | None:
    """The id of the Prefect deployment ``name`` (``rollout.deployment``), None when the server has none."""
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name).id
    except ObjectNotFound:
        return None


def latest_run(client, deployment_id: UUID):
    """The newest flow run of a deployment (by expected start), or None."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                                 sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)
    return runs[0] if runs else None


def wait_until_live(store: ObjectStore, client, deployment_id: UUID, version: int, since: dt.datetime,
                    timeout_seconds: float, poll_seconds: float = 2.0) -> Deployment:
    """Wait until model ``version`` is the live deployment; returns its record.

    Fails at once (RuntimeError with the run's state and message) when the newest run of the rollout
    deployment created since ``since`` ended without completing, and with TimeoutError after
    ``timeout_seconds``.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        current = read_current(store)
        if current is not None and current.status == "live" and current.model_version == str(version):
            return current
        run = latest_run(client, deployment_id)
        ours = run is not None and run.created is not None and run.created >= since and run.state is not None
        if ours and run.state.is_final() and not run.state.is_completed():
            raise RuntimeError(f"the rollout run {run.name} ended {run.state.name}: {run.state.message}")
        if time.monotonic() >= deadline:
            seen = f"the rollout run {run.name} is {run.state.name}" if ours else "no rollout run started"
            raise TimeoutError(f"model v{version} was not live behind the endpoint within {timeout_seconds:g} s "
                               f"(demo.rollout_timeout_seconds): {seen}")
        time.sleep(poll_seconds)


def champion_summary(store: ObjectStore, settings: Settings) -> DemoChampion:
    """The champion's version, family and test metrics, from its verified registry metadata."""
    from mlcycle.tasks.registry.versions import load_metadata, model_name

    champion = load_metadata(store, model_name(settings), "champion")
    return DemoChampion(version=champion.version, family=champion.family, metrics=champion.metrics)


def monitor_phase(label: str, report) -> MonitorPhase:
    """A monitor run's report (tasks.monitor.MonitorReport) as the demo summarises it."""
    return MonitorPhase(label=label, rows=report.rows, drift=report.drift.summary(),
                        trigger=f"{report.trigger.outcome} ({report.trigger.detail})", report=report.report_key)


# --------------------------------------------------------------------------------------------------
# Prefect tasks (thin)
# --------------------------------------------------------------------------------------------------


@task(name="demo-traffic", cache_policy=NO_CACHE)
def send_traffic_task(settings: Settings, url: str, days: list[dt.date]) -> dict[str, int]:
    return send_traffic(settings, open_store(settings), url, days)


@task(name="wait-for-inference-log", cache_policy=NO_CACHE)
def wait_for_logged_rows_task(settings: Settings, since: dt.datetime, rows: int) -> int:
    return wait_for_logged_rows(open_store(settings), since, rows, settings.demo.inference_log_timeout_seconds)


@task(name="wait-for-rollout", cache_policy=NO_CACHE, task_run_name="wait-for-rollout-v{version}")
def chained_rollout_task(settings: Settings, version: int, since: dt.datetime) -> Deployment | None:
    """Wait for the rollout the promotion started; None when the server has no rollout deployment."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment_id = rollout_deployment_id(client, settings.rollout.deployment)
        if deployment_id is None:
            return None
        return wait_until_live(open_store(settings), client, deployment_id, version, since,
                               settings.demo.rollout_timeout_seconds)


@task(name="champion", cache_policy=NO_CACHE)
def champion_task(settings: Settings) -> DemoChampion:
    return champion_summary(open_store(settings), settings)
