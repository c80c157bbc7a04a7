"""The ingest flows on real Prefect (one session-scoped harness): verdicts, artifacts, retries, backfill."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from mlcycle.tasks.partitions import list_partitions, read_manifest
from mlcycle.tasks.storage import open_store
from tests.support.env import minio_env
from tests.support.faults import retried_tasks

pytestmark = pytest.mark.flow

DAY = "2026-10-02"


@pytest.fixture
def flow_env(env_settings, prefect_harness):
    """get_settings() for flows: small batches, fast retries."""
    def apply(**extra):
        return env_settings(simulator__rows_per_day="300", retries__ingest__delay_seconds="0.2", **extra)
    return apply


def _artifacts(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:  # newest first
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                     sort=ArtifactSort.CREATED_DESC)


def test_ingest_flow_validates_and_publishes_with_artifacts(flow_env):
    from mlcycle.flows.ingest import ingest_flow

    settings = flow_env()
    state = ingest_flow(date=DAY, return_state=True)
    assert state.is_completed()
    manifest = state.result()
    assert manifest.zone == "validated" and manifest.flow_run_id
    table = _artifacts(f"validation-{DAY}")
    assert table and table[0].type == "table"
    verdict = _artifacts(f"validation-verdict-{DAY}")
    assert "PASSED" in verdict[0].data and "Data Docs" in verdict[0].data
    assert list_partitions(open_store(settings), "validated") == [dt.date.fromisoformat(DAY)]


def test_ingest_flow_fails_naming_expectations_when_quarantined(flow_env, tmp_path):
    from mlcycle.flows.ingest import ingest_flow
    from mlcycle.tasks.simulator import simulate_batch

    settings = flow_env()
    frame = simulate_batch(dt.date.fromisoformat(DAY), settings.simulator, settings.dataset).frame
    frame.loc[0, "region"] = "atlantis"
    landing = tmp_path / "landing"
    landing.mkdir()
    frame.to_parquet(landing / f"date={DAY}.parquet")
    settings = flow_env(landing_path=str(landing))

    state = ingest_flow(date=DAY, source="landing", return_state=True)
    assert state.is_failed()
    assert "quarantined" in state.message and "region" in state.message
    store = open_store(settings)
    assert list_partitions(store, "quarantine") == [dt.date.fromisoformat(DAY)]
    assert list_partitions(store, "validated") == []
    assert "FAILED" in _artifacts(f"validation-verdict-{DAY}")[0].data


def test_transient_store_outage_is_retried_and_the_run_succeeds(flow_env, s3_running, monkeypatch):
    """The store is down when the run starts and comes back once an attempt has failed on it: the failed
    task is retried (once) and the run completes with the whole partition."""
    from mlcycle.flows.ingest import ingest_flow
    from mlcycle.tasks import retry

    settings = flow_env(retries__ingest__retries="4", **minio_env(s3_running))
    open_store(settings).check()  # bucket exists before the outage
    judge = retry.retry_on_transient
    verdicts: list[bool] = []

    def back_once_an_attempt_failed(task_, task_run, state) -> bool:
        verdicts.append(judge(task_, task_run, state))
        if not s3_running.running:
            s3_running.start()  # the outage ends before the retry starts
        return verdicts[-1]

    monkeypatch.setattr(retry, "retry_on_transient", back_once_an_attempt_failed)
    s3_running.stop()
    state = ingest_flow(date=DAY, return_state=True)
    assert state.is_completed(), state.message
    assert verdicts == [True]  # one attempt failed on the outage, judged transient
    assert retried_tasks(state.state_details.flow_run_id) == {f"ingest-raw-{DAY}": 2}
    assert read_manifest(open_store(settings), "validated", dt.date.fromisoformat(DAY)).rows == 300


def test_store_that_stays_down_fails_clearly_leaving_no_partition(flow_env, s3_running):
    from mlcycle.flows.ingest import ingest_flow

    settings = flow_env(retries__ingest__retries="2", **minio_env(s3_running))
    store = open_store(settings)
    store.check()
    s3_running.stop()
    started = time.monotonic()
    state = ingest_flow(date=DAY, return_state=True)
    assert state.is_failed()
    assert retried_tasks(state.state_details.flow_run_id) == {f"ingest-raw-{DAY}": 3}  # the first try + 2 retries
    host, port = settings.s3_endpoint.rsplit(":", 1)
    assert state.message == (
        f"Flow run encountered an exception: StoreUnavailable: {store.description}: cannot read "
        f"'raw/date={DAY}/manifest.json': endpoint unreachable: HTTPConnection(host='{host}', port={port}): "
        "Failed to establish a new connection: [Errno 111] Connection refused")
    assert time.monotonic() - started < 120
    s3_running.start()
    assert store.list("") == []  # nothing half-written anywhere


def test_backfill_runs_every_date_and_reports_the_bad_ones(flow_env, tmp_path):
    from mlcycle.flows.ingest import backfill_flow
    from mlcycle.tasks.simulator import simulate_batch

    settings = flow_env()
    days = [dt.date(2026, 10, 1) + dt.timedelta(days=i) for i in range(4)]
    landing = tmp_path / "landing"
    landing.mkdir()
    for day in days[:3]:  # the 4th day has no file
        frame = simulate_batch(day, settings.simulator, settings.dataset).frame
        if day == days[1]:
            frame.loc[0, "age"] = 150
        frame.to_parquet(landing / f"date={day}.parquet")
    settings = flow_env(landing_path=str(landing))
    state = backfill_flow(start=str(days[0]), end=str(days[-1]), source="landing", concurrency=2,
                          return_state=True)
    assert state.is_failed()
    assert "2 validated, 1 quarantined, 1 failed of 4 dates" in state.message
    assert f"{days[3]} failed" in state.message and "ingest: no data for" in state.message
    store = open_store(settings)
    assert list_partitions(store, "validated") == [days[0], days[2]]
    assert list_partitions(store, "quarantine") == [days[1]]
    progress = _artifacts("backfill-progress")
    assert progress and progress[0].data == 100.0
    assert progress[0].description.startswith(f"backfill {days[0]}..{days[-1]}, last: 2026-10-0")
    verdicts = {row["date"]: row["verdict"] for row in json.loads(_artifacts("backfill-validation")[0].data)}
    assert verdicts == {str(days[0]): "validated", str(days[1]): "quarantined", str(days[2]): "validated",
                        str(days[3]): "failed"}
    verdict = _artifacts(f"validation-verdict-{days[1]}")[0].data  # a quarantined date's own artifacts
    assert "FAILED" in verdict and "age" in verdict


def test_backfill_of_good_dates_completes(flow_env):
    from mlcycle.flows.ingest import backfill_flow

    settings = flow_env()
    report = backfill_flow(start="2026-10-01", end="2026-10-03", concurrency=3)
    assert report.count("validated") == 3
    assert len(list_partitions(open_store(settings), "validated")) == 3
