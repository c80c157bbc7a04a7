"""Repeated and concurrent monitor runs over one drifted window start at most one training.

The world: a champion trained by the real train flow, logged traffic from after the drift date
(``simulator.drift`` shifts ``debt_ratio``, a critical feature), the ``train/mlcycle-on-demand`` deployment on
the test Prefect server (no worker: a started training stays Scheduled, which is also what makes
"one training at a time" observable). Then N monitor runs in separate processes (``mlcycle monitor``,
real flows against the same Prefect API and the same store) race over the same window, and N more
run one after another. The thing counted is what the monitor does to start a training: flow runs of
the train deployment, plus the trigger ledger in the store.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from mlcycle.tasks.monitor.trigger import trigger_records
from mlcycle.tasks.storage import open_store
from tests.support.env import ROOT
from tests.support.faults import FAST_FLOW_ENV, flow_settings
from tests.support.training import copy_template

pytestmark = [pytest.mark.flow, pytest.mark.slow]

CONCURRENT = 3
REPEATED = 2
DRIFTED_DAY = dt.date(2026, 10, 23)  # mlcycle.yaml: debt_ratio shifts from 2026-10-22


def _train_runs(deployment_id: str, since: dt.datetime) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    return [r for r in runs if r.created and r.created >= since]


@pytest.fixture(scope="module")
def drifted_world(prefect_harness, validated_template, tmp_path_factory):
    from mlcycle.flows.train import train_flow
    from mlcycle.tasks.registry.versions import load_model
    from mlcycle.tasks.traffic import log_in_process

    home = tmp_path_factory.mktemp("monitors") / "home"
    copy_template(validated_template, home)
    # its own train deployment: other modules on the shared Prefect harness trigger theirs
    with flow_settings(home, MONITOR__COOLDOWN_HOURS="24",
                       MONITOR__TRAIN_DEPLOYMENT="train/faults-monitors") as settings:
        assert train_flow().promoted
        store = open_store(settings)
        champion = load_model(store, "loans-default")
        log_in_process(store, settings, champion, [DRIFTED_DAY], rows_per_day=1500, spill_dir=home / "spill")
        flow_name, name = settings.monitor.train_deployment.split("/")
        assert flow_name == train_flow.name
        deployment_id = str(train_flow.to_deployment(name=name).apply())
        yield home, settings, store, deployment_id


def test_concurrent_and_repeated_monitors_over_one_drifted_window_start_one_training(drifted_world):
    from prefect.settings import PREFECT_API_URL

    from mlcycle.flows.monitor import monitor_flow

    home, settings, store, deployment_id = drifted_world
    since = dt.datetime.now(dt.UTC)
    end = dt.datetime.combine(DRIFTED_DAY + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).isoformat()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCYCLE_")}
    env.update({"MLCYCLE_HOME": str(home), "MLCYCLE_CONFIG": str(ROOT / "mlcycle.yaml"),
                "MLCYCLE_MONITOR__COOLDOWN_HOURS": "24", "PREFECT_API_URL": PREFECT_API_URL.value(),
                "MLCYCLE_MONITOR__TRAIN_DEPLOYMENT": settings.monitor.train_deployment,
                **{f"MLCYCLE_{k}": v for k, v in FAST_FLOW_ENV.items()}})
    racers = [subprocess.Popen([sys.executable, "-m", "mlcycle.flows.cli", "monitor", "--hours", "24", "--end", end,
                                "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(CONCURRENT)]
    outcomes = []
    for proc in racers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        report = json.loads(out)
        assert report["drift"]["dataset_drift"] and "debt_ratio" in json.dumps(report["drift"])
        outcomes.append(report["trigger"]["outcome"])
    with flow_settings(home, MONITOR__COOLDOWN_HOURS="24", MONITOR__TRAIN_DEPLOYMENT=settings.monitor.train_deployment):
        for _ in range(REPEATED):
            outcomes.append(monitor_flow(hours=24, end=end).trigger.outcome)

    assert outcomes.count("triggered") == 1, outcomes
    assert set(outcomes) <= {"triggered", "already-triggered", "training-running"}, outcomes
    runs = _train_runs(deployment_id, since)
    assert len(runs) == 1, [r.name for r in runs]  # one training started, by whichever monitor won
    (record,) = trigger_records(store)  # and one ledger entry, pointing at that run
    assert record.status == "started" and record.training_flow_run_id == str(runs[0].id)
    assert "debt_ratio" in runs[0].parameters["reason"]
