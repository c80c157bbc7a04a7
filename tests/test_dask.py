"""Dask: one setting (``dask.address``) sends the backfill's per-date work, the monitor's per-feature drift
and the training search to a Dask cluster; the results equal the in-process run.

The cluster is a real ``distributed.LocalCluster`` (two worker processes, one thread each, on 127.0.0.1);
flows run on the session's Prefect harness. That the work ran on the workers is checked on the
scheduler's task stream, not inferred from the absence of errors.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlcycle.tasks.storage import open_store
from tests.support.env import ROOT, free_port, settings_env

pytestmark = pytest.mark.flow

DAYS = [dt.date(2026, 10, 1) + dt.timedelta(days=i) for i in range(6)]
BAD_DAY = DAYS[2]  # its landing file holds an out-of-range age: quarantined both ways


# --------------------------------------------------------------------------------------------------
# configuration: one place, and no Dask at all without it
# --------------------------------------------------------------------------------------------------


def test_dask_address_is_one_setting_for_every_stage(env_settings, monkeypatch):
    settings = env_settings(dask__address="tcp://10.0.0.5:8786", dask__connect_timeout_seconds="3")
    assert settings.dask.address == "tcp://10.0.0.5:8786" and settings.dask.connect_timeout_seconds == 3
    assert settings.training.dask_scheduler == "tcp://10.0.0.5:8786"  # the search uses the same cluster
    assert settings.training.resolved_backend == "dask"
    own = env_settings(training__dask_scheduler="tcp://10.0.0.9:8786")
    assert own.training.dask_scheduler == "tcp://10.0.0.9:8786"  # an explicit training scheduler wins
    monkeypatch.delenv("MLCYCLE_TRAINING__DASK_SCHEDULER")
    unset = env_settings(dask__address="")
    assert unset.dask.address is None and unset.training.dask_scheduler is None
    assert unset.training.resolved_backend == "loky"


def test_a_non_positive_connect_timeout_is_refused_naming_the_key(env_settings):
    from mlcycle.tasks.settings import ConfigError

    with pytest.raises(ConfigError, match=r"dask\.connect_timeout_seconds"):
        env_settings(dask__connect_timeout_seconds="0")


def test_without_an_address_nothing_imports_dask():
    code = ("import sys\n"
            "import mlcycle.flows.ingest, mlcycle.flows.monitor\n"
            "from mlcycle.tasks.runners import dask_task_runner\n"
            "from mlcycle.tasks.settings import load_settings\n"
            "assert dask_task_runner(load_settings()) is None\n"
            "loaded = sorted(m for m in ('dask', 'distributed', 'prefect_dask') if m in sys.modules)\n"
            "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_unreachable_scheduler_fails_at_once_naming_the_address(env_settings):
    from mlcycle.tasks.runners import DaskUnavailable, dask_task_runner

    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    settings = env_settings(dask__address=address, dask__connect_timeout_seconds="1")
    with pytest.raises(DaskUnavailable, match=rf"Dask scheduler at {address} within 1 s.*MLCYCLE_DASK__ADDRESS"):
        dask_task_runner(settings)


def test_backfill_against_an_unreachable_scheduler_fails_naming_it_and_writes_nothing(env_settings,
                                                                                      prefect_harness):
    from mlcycle.flows.ingest import backfill_flow

    address = f"tcp://127.0.0.1:{free_port()}"
    settings = env_settings(dask__address=address, dask__connect_timeout_seconds="1")
    state = backfill_flow(start=str(DAYS[0]), end=str(DAYS[1]), return_state=True)
    assert state.is_failed()
    assert address in state.message and "MLCYCLE_DASK__ADDRESS" in state.message
    assert open_store(settings).list("") == []


# --------------------------------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, one thread each, everything on 127.0.0.1; a client to watch the scheduler."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
                      dashboard_address=None) as local, Client(local, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=120)
        yield local, client


def _ran_on_workers(client, run) -> tuple[object, list[dict]]:
    """Run ``run()`` while recording the scheduler's task stream: (its result, the tasks the workers ran)."""
    from distributed import get_task_stream

    with get_task_stream(client=client) as stream:
        result = run()
    return result, list(stream.data)


# --------------------------------------------------------------------------------------------------
# backfill: the same store either way
# --------------------------------------------------------------------------------------------------

# Fields that record when and by which run something happened (and GX's per-run identifiers); every
# other byte of the store must match.
VOLATILE = {"ingested_at", "flow_run_id", "manifest_sha256", "validated_at", "docs_key", "docs_uri", "meta", "id"}


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def store_contents(root: Path) -> dict[str, object]:
    """Every object under the store: data files as bytes, JSON documents without their volatile fields.

    Data Docs pages embed their render time in their names and bodies: only their presence is compared.
    """
    out: dict[str, object] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = path.relative_to(root).as_posix()
        if "/docs/" in key:
            out[key.split("/docs/")[0] + "/docs/"] = "present"
        elif key.endswith(".json"):
            out[key] = _stable(json.loads(path.read_bytes()))
        else:
            out[key] = path.read_bytes()
    return out


def _landing(settings, folder: Path) -> Path:
    from mlcycle.tasks.simulator import simulate_batch

    folder.mkdir(parents=True)
    for day in DAYS:
        frame = simulate_batch(day, settings.simulator, settings.dataset).frame
        if day == BAD_DAY:
            frame.loc[0, "age"] = 150
        frame.to_parquet(folder / f"date={day}.parquet")
    return folder


def test_backfill_on_dask_writes_the_same_store_as_the_local_run(env_settings, prefect_harness, cluster, tmp_path,
                                                                 monkeypatch):
    from mlcycle.flows.ingest import backfill_flow
    from mlcycle.tasks.partitions import read_manifest
    from mlcycle.tasks.settings import get_settings

    local_cluster, client = cluster
    env = {"simulator__rows_per_day": "300", "retries__ingest__delay_seconds": "0.2",
           "ingest__backfill_concurrency": "4"}
    env["landing_path"] = str(_landing(env_settings(**env), tmp_path / "landing"))
    env_settings(**env)
    start, end = str(DAYS[0]), str(DAYS[-1])

    def run_in(home: str):
        monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path / home))
        get_settings.cache_clear()
        began = time.perf_counter()
        state = backfill_flow(start=start, end=end, source="landing", return_state=True)
        return get_settings(), state, time.perf_counter() - began

    local_settings, local, local_seconds = run_in("local")
    assert local_settings.dask.address is None
    monkeypatch.setenv("MLCYCLE_DASK__ADDRESS", local_cluster.scheduler_address)
    (dask_settings, on_dask, dask_seconds), ran = _ran_on_workers(client, lambda: run_in("dask"))
    assert dask_settings.dask.address == local_cluster.scheduler_address
    print(f"\nbackfill of {len(DAYS)} dates: local {local_seconds:.1f} s, Dask LocalCluster {dask_seconds:.1f} s")

    # the same verdicts: five validated, the bad date quarantined naming the column, both runs failed for it
    for state in (local, on_dask):
        assert state.is_failed()
        assert "5 validated, 1 quarantined, 0 failed of 6 dates" in state.message
        assert f"{BAD_DAY} quarantined" in state.message and "age" in state.message
    assert local.message == on_dask.message

    # the same store, object for object; lineage points at each run's own backfill flow run
    local_store, dask_store = (s.store_root for s in (local_settings, dask_settings))
    local_contents = store_contents(local_store)
    assert len(local_contents) > 6 * 4
    assert store_contents(dask_store) == local_contents
    for settings, state in ((local_settings, local), (dask_settings, on_dask)):
        manifest = read_manifest(open_store(settings), "validated", DAYS[0])
        assert manifest.flow_run_id == str(state.state_details.flow_run_id)

    # and the work ran on both Dask workers: three tasks per date (ingest, validate, publish)
    workers = {t["worker"] for t in ran}
    assert len(ran) == 3 * len(DAYS), [t["key"] for t in ran]
    assert workers == set(local_cluster.scheduler_info["workers"]), workers


# --------------------------------------------------------------------------------------------------
# monitor: the same per-feature drift either way
# --------------------------------------------------------------------------------------------------

DRIFT_DATE = dt.date(2026, 10, 22)  # mlcycle.yaml: debt_ratio (critical) shifts 0.8 sd from this date


@pytest.fixture(scope="module")
def monitored(prefect_harness, tmp_path_factory):
    """A champion trained on Oct 2-13 and logged traffic for Oct 21-23; a train deployment of its own."""

    from mlcycle.flows.train import train_flow
    from mlcycle.tasks.ingest import publish, validate_raw, write_raw
    from mlcycle.tasks.registry.versions import load_model, model_name
    from mlcycle.tasks.simulator import simulate_batch
    from mlcycle.tasks.traffic import log_in_process

    home = tmp_path_factory.mktemp("dask-monitor") / "home"
    env = {"MLCYCLE_HOME": str(home), "MLCYCLE_SIMULATOR__ROWS_PER_DAY": "800", "MLCYCLE_TRAINING__N_ITER": "2",
           "MLCYCLE_TRAINING__FAMILY": "logistic_regression", "MLCYCLE_ROLLOUT__AFTER_PROMOTION": "false",
           "MLCYCLE_MONITOR__TRAIN_DEPLOYMENT": "train/dask-equivalence",
           # its own model name: the trigger's window id (and idempotency key) never meets another test's
           "MLCYCLE_TRAINING__MODEL_NAME": "loans-dask-equivalence"}
    with settings_env(env, unset=("MLCYCLE_DASK__ADDRESS",)) as settings:
        store = open_store(settings)
        for i in range(12):
            day = dt.date(2026, 10, 2) + dt.timedelta(days=i)
            raw = write_raw(store, settings, day, simulate_batch(day, settings.simulator, settings.dataset))
            publish(store, validate_raw(store, settings, raw.ref()))
        assert train_flow(days=10).promoted
        champion = load_model(store, model_name(settings), "champion")
        days = [DRIFT_DATE - dt.timedelta(days=1) + dt.timedelta(days=i) for i in range(3)]
        log_in_process(store, settings, champion, days, rows_per_day=1500, spill_dir=home / "spill")
        train_flow.to_deployment(name="dask-equivalence").apply()  # a triggered run stays Scheduled
        yield settings


def _monitor(end_day: dt.date, address: str | None, monkeypatch):
    from mlcycle.flows.monitor import monitor_flow
    from mlcycle.tasks.settings import get_settings

    if address:
        monkeypatch.setenv("MLCYCLE_DASK__ADDRESS", address)
    else:
        monkeypatch.delenv("MLCYCLE_DASK__ADDRESS", raising=False)
    get_settings.cache_clear()
    assert get_settings().dask.address == address
    end = dt.datetime.combine(end_day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).isoformat()
    return monitor_flow(hours=24, end=end)


def test_per_feature_pieces_give_exactly_the_in_process_evaluation(monitored):
    """The fan-out's plain functions, without Prefect or Dask: column by column equals the whole frame."""
    from mlcycle.tasks.monitor.window import (
        evaluate,
        prediction_column,
        report_from_parts,
        summarize_window,
        window_feature_drift,
        window_for,
        window_prediction_drift,
    )
    from mlcycle.tasks.registry.versions import load_metadata, load_profile, model_name
    from mlcycle.tasks.settings import ConfigError

    settings, store = monitored, open_store(monitored)
    champion = load_metadata(store, model_name(settings), "champion")
    end = dt.datetime.combine(DRIFT_DATE + dt.timedelta(days=2), dt.time(), tzinfo=dt.UTC)
    window = window_for(champion.name, champion.version, 24, end)
    whole = evaluate(store, window, load_profile(store, champion.name, "champion"), champion.metrics.model_dump(),
                     settings.dataset, settings.drift, settings.monitor)
    summary = summarize_window(store, window, champion.metrics.model_dump(), settings.dataset, settings.monitor)
    pieces = report_from_parts(
        summary, [window_feature_drift(store, window, settings.dataset, f.name) for f in settings.dataset.features],
        window_prediction_drift(store, window, prediction_column(settings.dataset.task)), settings.drift)
    assert whole.drift.dataset_drift
    assert pieces.model_dump() == whole.model_dump()
    with pytest.raises(ConfigError, match="has no feature .salary."):
        window_feature_drift(store, window, settings.dataset, "salary")


def test_monitor_drift_per_feature_on_dask_equals_the_local_run(monitored, cluster, monkeypatch):
    local_cluster, client = cluster
    day = DRIFT_DATE + dt.timedelta(days=1)
    local = _monitor(day, None, monkeypatch)
    on_dask, ran = _ran_on_workers(client, lambda: _monitor(day, local_cluster.scheduler_address, monkeypatch))

    assert local.drift.dataset_drift and "debt_ratio" in local.drift.drifted_features
    assert len(local.drift.features) == len(monitored.dataset.features) and local.drift.prediction is not None
    # every statistic, p-value, BH-adjusted p-value and verdict, exactly (no tolerance)
    assert on_dask.drift.model_dump() == local.drift.model_dump()
    assert (on_dask.rows, on_dask.reasons, on_dask.window_id) == (local.rows, local.reasons, local.window_id)
    assert on_dask.performance == local.performance
    assert local.trigger.outcome == "triggered" and on_dask.trigger.outcome == "already-triggered"

    # the window summary, one task per feature and one for the predictions ran on the Dask workers
    assert len(ran) == 1 + len(monitored.dataset.features) + 1, [t["key"] for t in ran]
    assert {t["worker"] for t in ran} == set(local_cluster.scheduler_info["workers"])


def test_monitor_on_dask_with_an_empty_window_decides_nothing_like_the_local_run(monitored, cluster, monkeypatch):
    local_cluster, client = cluster
    day = dt.date(2026, 10, 10)  # no traffic logged
    local = _monitor(day, None, monkeypatch)
    on_dask, ran = _ran_on_workers(client, lambda: _monitor(day, local_cluster.scheduler_address, monkeypatch))
    assert not local.drift.enough_data and local.rows == 0
    assert on_dask.drift.model_dump() == local.drift.model_dump()
    assert on_dask.trigger.outcome == local.trigger.outcome == "not-enough-data"
    assert len(ran) == 1  # the summary only: no per-feature work for a window without rows


# --------------------------------------------------------------------------------------------------
# training: the search follows dask.address
# --------------------------------------------------------------------------------------------------


def test_training_search_runs_on_the_dask_address_with_the_same_result(train_env, cluster):
    from mlcycle.tasks.training.challenger import train_challenger
    from mlcycle.tasks.training.window import select_window
    from tests.support.training import fast_settings

    local_cluster, client = cluster
    settings, store = train_env
    # only dask.address is given: training.dask_scheduler follows it (n_jobs -1: every worker may take a fit)
    on_dask = fast_settings(settings.home, training={"n_jobs": -1}, dask={"address": local_cluster.scheduler_address})
    assert on_dask.training.dask_scheduler == local_cluster.scheduler_address
    window = select_window(store, days=settings.training.window_days)
    local = train_challenger(store, settings, window)
    remote, ran = _ran_on_workers(client, lambda: train_challenger(store, on_dask, window))
    assert remote.search.backend.startswith(f"dask ({local_cluster.scheduler_address}")
    assert remote.scores == local.scores and remote.search.best_params == local.search.best_params
    assert ran and {t["worker"] for t in ran} <= set(local_cluster.scheduler_info["workers"])
