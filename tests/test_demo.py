"""The demo flow's steps (tasks/demo.py): its traffic days, and its two waits, each bounded and explaining itself.

Real parts throughout: a local object store, the inference log writer the service uses (on its own flush
timer), the session's Prefect test server. The one stand-in: the rollout run the promotion would start on
a worker is created from a deployment and moved to its final state through the Prefect API; no worker
runs it, since what the wait reads is that run's state and the deployment record in the store.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

import numpy as np
import pytest

from mlcycle.tasks.demo import (
    catch_up_range,
    logged_rows_since,
    rollout_deployment_id,
    traffic_phases,
    wait_for_logged_rows,
    wait_until_live,
)


def test_traffic_straddles_the_first_drift_date_and_the_served_days_get_ingested(settings):
    first_drift = min(e.start for e in settings.simulator.drift)
    (before, before_days), (after, after_days) = traffic_phases(settings)
    assert before == "before the drift date" and before_days[-1] == first_drift - dt.timedelta(days=1)
    assert after == "after the drift date" and after_days[0] == first_drift and len(after_days) == 4
    first_not_backfilled = settings.demo.start + dt.timedelta(days=settings.demo.days)
    assert catch_up_range(settings, after_days[-1]) == (first_not_backfilled, after_days[-1])
    assert catch_up_range(settings, first_not_backfilled - dt.timedelta(days=1)) is None


@pytest.mark.parametrize("days, sent", [(14, 4), (2, 2)])
def test_on_the_users_own_data_the_demo_sends_the_last_days_it_ingested(settings, days, sent):
    """Landing source: no drift schedule and no simulated rows; the last (up to) four ingested days, once."""
    own = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"source": "landing"}),
                                      "demo": settings.demo.model_copy(update={"days": days})})
    ((label, chosen),) = traffic_phases(own)
    last = own.demo.start + dt.timedelta(days=days - 1)
    assert label == "the latest stored days"
    assert chosen == [last - dt.timedelta(days=i) for i in range(sent - 1, -1, -1)]
    assert catch_up_range(own, last + dt.timedelta(days=3)) is None


# --------------------------------------------------------------------------------------------------
# waiting for the inference log to hold the rows sent
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def log_writer(settings, tmp_path):
    """The service's inference log writer on a local store, flushing every 0.2 s; submit(n, ts) logs n rows."""
    from mlcycle.tasks.inference_log import InferenceLogWriter
    from mlcycle.tasks.simulator import simulate_batch
    from mlcycle.tasks.storage import open_store

    spec = settings.dataset
    store = open_store(settings)
    writer = InferenceLogWriter(store, model="loans-default", model_version=1, features=spec.features,
                                id_column=spec.id_column, spill_dir=tmp_path / "spill", queue_rows=10_000,
                                flush_rows=10_000, flush_interval_seconds=0.2).start()
    frame = simulate_batch(settings.demo.start, settings.simulator, spec, rows=50).frame

    def submit(n: int, ts: dt.datetime | None = None) -> None:
        part = frame.head(n)
        writer.submit(uuid.uuid4().hex, "predict", {f.name: part[f.name].to_numpy() for f in spec.features},
                      part[spec.id_column].astype(str).tolist(),
                      {"probability": np.full(n, 0.5), "label": np.zeros(n, np.int8)}, ts=ts)

    yield store, submit
    writer.close()


def test_the_wait_returns_once_the_rows_sent_are_logged_counting_only_rows_since_it_began(log_writer):
    store, submit = log_writer
    since = dt.datetime.now(dt.UTC)
    submit(7, ts=since - dt.timedelta(minutes=5))  # earlier traffic, flushed late: not part of this window
    submit(30)
    assert wait_for_logged_rows(store, since, 30, timeout_seconds=20, poll_seconds=0.05) == 30
    assert logged_rows_since(store, since - dt.timedelta(minutes=10)) == 37


def test_the_log_wait_times_out_naming_the_rows_it_waited_for(log_writer):
    store, submit = log_writer
    since = dt.datetime.now(dt.UTC)
    submit(3)
    wait_for_logged_rows(store, since, 3, timeout_seconds=20, poll_seconds=0.05)
    with pytest.raises(TimeoutError, match=rf"held 3 of the 10 rows sent since {since:%H:%M:%S} UTC after 0.3 s "
                                           r"\(demo.inference_log_timeout_seconds\)"):
        wait_for_logged_rows(store, since, 10, timeout_seconds=0.3, poll_seconds=0.05)


# --------------------------------------------------------------------------------------------------
# waiting for the promotion's rollout to be live behind the endpoint
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def rollout_deployment(prefect_harness):
    """A Prefect client and a fresh deployment standing for rollout/mlcycle-on-demand (a unique name per test)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_name = f"rollout-{uuid.uuid4().hex[:8]}"
        deployment_id = client.create_deployment(flow_id=client.create_flow_from_name(flow_name), name="on-demand")
        assert rollout_deployment_id(client, f"{flow_name}/on-demand") == deployment_id
        yield client, deployment_id


def failed_run(client, deployment_id, message: str):
    from prefect.states import Failed

    run = client.create_flow_run_from_deployment(deployment_id)
    client.set_flow_run_state(run.id, Failed(message=message), force=True)
    return client.read_flow_run(run.id)


def test_a_failed_rollout_run_is_reported_at_once_with_its_own_message(rollout_deployment, settings):
    from mlcycle.tasks.storage import open_store

    client, deployment_id = rollout_deployment
    since = dt.datetime.now(dt.UTC)
    run = failed_run(client, deployment_id, "rollout 1f2e of loans-default v2 failed at ready: exited with code 3")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"the rollout run {run.name} ended Failed: rollout 1f2e of "
                                           r"loans-default v2 failed at ready: exited with code 3"):
        wait_until_live(open_store(settings), client, deployment_id, 2, since, timeout_seconds=60, poll_seconds=0.1)
    assert time.monotonic() - started < 10  # it did not sit out the timeout


def test_the_rollout_wait_times_out_naming_the_version_and_ignores_older_runs(rollout_deployment, settings):
    from mlcycle.tasks.storage import open_store

    client, deployment_id = rollout_deployment
    older = failed_run(client, deployment_id, "an earlier rollout failed")
    since = older.created + dt.timedelta(milliseconds=1)  # the training began after that run
    with pytest.raises(TimeoutError, match=r"model v2 was not live behind the endpoint within 0.5 s "
                                           r"\(demo.rollout_timeout_seconds\): no rollout run started"):
        wait_until_live(open_store(settings), client, deployment_id, 2, since, timeout_seconds=0.5, poll_seconds=0.1)


def test_the_rollout_wait_returns_the_live_deployment_of_that_version(rollout_deployment, settings):
    from mlcycle.tasks.records.rollout import CURRENT_KEY, Deployment
    from mlcycle.tasks.storage import open_store

    client, deployment_id = rollout_deployment
    store = open_store(settings)
    live = Deployment(id="d-2", status="live", target="process", model_name="loans-default", model_version="2",
                      bento_tag="mlcycle-model:v2-abc", endpoint_url="http://127.0.0.1:3080",
                      requested_at=dt.datetime.now(dt.UTC), live_since=dt.datetime.now(dt.UTC))
    store.put_bytes(CURRENT_KEY, live.model_dump_json().encode())
    since = dt.datetime.now(dt.UTC)
    assert wait_until_live(store, client, deployment_id, 2, since, timeout_seconds=5, poll_seconds=0.1) == live
    with pytest.raises(TimeoutError, match="model v3 was not live"):  # v2 live is not v3 live
        wait_until_live(store, client, deployment_id, 3, since, timeout_seconds=0.3, poll_seconds=0.1)
