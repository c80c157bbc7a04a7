"""The whole life cycle through the deployments, from an empty store, driven the way CI drives it.

One `mlcycle up` stack (Prefect server on SQLite, `prefect deploy --all`, a process worker) on free ports
with its home in a temp folder; every stage runs as ``prefect deployment run <flow>/<deployment> --watch``
in a subprocess, so each run really goes server -> worker -> a new flow-run process:

1. the ``deploy`` workflow's command redeploys prefect.yaml (what a push to main does);
2. ``backfill/mlcycle-range`` ingests and validates 30 simulated days (2026-10-01..30), ``ingest/mlcycle-daily``
   one more, ``validate/mlcycle-revalidate`` re-validates one;
3. the ``train`` workflow's command, read from .github/workflows/train.yml and run verbatim: first with a
   window that has no data (the job must go red, naming why), then on the days before the scheduled
   drift: a champion, whose promotion starts ``rollout/mlcycle-on-demand`` (package, test-serve, blue/green);
4. ``package/mlcycle-on-demand``, then ``rollout/mlcycle-on-demand`` by hand with the packaged bento;
5. traffic through the stable endpoint (pre-drift days, then drifted days), logged by the service;
   labels for it with ``mlcycle labels --simulate``;
6. ``monitor/mlcycle-hourly`` over the pre-drift window: no drift, no training; over the drifted window: the
   scheduled drift is found and exactly one ``train/mlcycle-on-demand`` run starts, and goes through the gate;
   the same window monitored again starts nothing;
7. ``rollout/mlcycle-rollback`` puts the previous deployment back behind the endpoint.

The stack's cron schedules are paused right after deploying: the test starts every run itself, and a
``monitor/mlcycle-hourly`` run fired by the clock at :05 in the middle of it would race with its own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import yaml

from tests.support.endpoint import NEEDS_NGINX
from tests.support.env import REQUIRE_SYSTEM_TOOLS, ROOT, free_port

pytestmark = [pytest.mark.slow, NEEDS_NGINX, pytest.mark.timeout(1800)]

CHROMIUM = Path("/usr/bin/chromium")
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists() and not REQUIRE_SYSTEM_TOOLS,
    reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")

WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent  # the venv's bin: `prefect`, as the workflows call it after `make install`
ROWS_PER_DAY = 400  # 10 training days -> 2,400 train / 800 test rows; 3 days of traffic -> 1,200 rows
BACKFILL = ("2026-10-01", "2026-10-30")
DAILY = "2026-10-31"
CHAMPION_WINDOW_END = "2026-10-21"  # the day before simulator.drift starts (2026-10-22)
PRE_DRIFT_DAYS = [dt.date(2026, 10, d) for d in (17, 18, 19)]
DRIFTED_DAYS = [dt.date(2026, 10, d) for d in (24, 25, 26)]
TRAIN = "train/mlcycle-on-demand"
RUN_TIMEOUT = 900


# --------------------------------------------------------------------------------------------------
# the workflows' commands
# --------------------------------------------------------------------------------------------------


def workflow_step(file: str, step_name: str) -> dict:
    """The step called ``step_name`` of the workflow ``file`` (every job searched)."""
    workflow = yaml.safe_load((WORKFLOWS / file).read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"] if s.get("name") == step_name]
    assert len(steps) == 1, f"{file}: expected one step named {step_name!r}, found {len(steps)}"
    return steps[0]


def run_workflow_step(step: dict, env: dict, extra_env: dict | None = None,
                      timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """The step's ``run:`` script, verbatim, in bash (as GitHub's runner does), from the repository root.

    The step's ``env:`` values are GitHub expressions (secrets, inputs); ``extra_env`` supplies what they
    would evaluate to. ``prefect`` resolves to this venv's, as it does after the workflow's `make install`.
    """
    assert "${{" not in step["run"], "the run: script must take secrets and inputs from env:, not expressions"
    full = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", **(extra_env or {})}
    missing = [k for k in step.get("env", {}) if k not in full]
    assert not missing, f"the test does not provide the step's environment {missing}"
    return subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], capture_output=True, text=True,
                          env=full, cwd=ROOT, timeout=timeout)


# --------------------------------------------------------------------------------------------------
# the stack and its runs
# --------------------------------------------------------------------------------------------------


class Stack:
    """One `mlcycle up` stack in a temp home, plus the helpers the life cycle needs."""

    def __init__(self, home: Path) -> None:
        self.prefect_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLCYCLE_"))}
        env.update({
            "MLCYCLE_HOME": str(home), "MLCYCLE_CONFIG": str(ROOT / "mlcycle.yaml"),
            "MLCYCLE_PREFECT_PORT": str(self.prefect_port), "MLCYCLE_WORKER_PORT": str(free_port()),
            "MLCYCLE_SIMULATOR__ROWS_PER_DAY": str(ROWS_PER_DAY),
            "MLCYCLE_TRAINING__N_ITER": "3", "MLCYCLE_TRAINING__N_JOBS": "1",
            "MLCYCLE_ROLLOUT__TARGET": "process", "MLCYCLE_ROLLOUT__ENDPOINT_PORT": str(free_port()),
            "MLCYCLE_ROLLOUT__DRAIN_SECONDS": "5", "MLCYCLE_ROLLOUT__STOP_GRACE_SECONDS": "10",
            "MLCYCLE_SERVING__CANARY_ROWS": "100", "MLCYCLE_SERVING__LATENCY_REQUESTS": "20",
            "MLCYCLE_SERVING__INFERENCE_LOG__FLUSH_INTERVAL_SECONDS": "2",
            # the worker polls for due runs every 2 s instead of 10 (the worker inherits this environment)
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "BENTOML_DO_NOT_TRACK": "true",
            "GX_ANALYTICS_ENABLED": "false",
        })
        self.env = env
        self.lived = False  # set once the life cycle has run on it (the screenshot test needs its runs)
        self.api = f"http://127.0.0.1:{self.prefect_port}/api"
        self.api_env = {**env, "PREFECT_API_URL": self.api}
        with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("MLCYCLE_")}):
            from mlcycle.tasks.settings import load_settings

            self.settings = load_settings()  # exactly what the flow runs on the worker read

    def mlcycle(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mlcycle.flows.cli", *args], capture_output=True, text=True,
                              env=self.env, cwd=ROOT, timeout=timeout)

    def mlcycle_json(self, *args: str) -> dict:
        done = self.mlcycle(*args, "--json")
        assert done.returncode == 0, f"mlcycle {' '.join(args)} failed: {done.stderr[-2000:]}"
        return json.loads(done.stdout)

    def run(self, deployment: str, *params: str) -> str:
        """`prefect deployment run <deployment> --param k=v ... --watch`; asserts it completed; the run id."""
        argv = ["prefect", "deployment", "run", deployment, *(a for p in params for a in ("--param", p)), "--watch"]
        done = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, env=self.api_env,
                              cwd=ROOT, timeout=RUN_TIMEOUT)
        assert done.returncode == 0, f"`{shlex.join(argv)}` failed:\n{(done.stdout + done.stderr)[-3000:]}"
        return flow_run_id(done.stdout)

    @contextlib.contextmanager
    def client(self):
        """A synchronous Prefect client on this stack's API."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api}), get_client(sync_client=True) as client:
            yield client

    def runs_of(self, deployment: str) -> list:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        with self.client() as client:
            deployment_id = client.read_deployment_by_name(deployment).id
            by_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            return client.read_flow_runs(deployment_filter=by_deployment)

    def flow_run(self, run_id: str):
        with self.client() as client:
            return client.read_flow_run(run_id)

    def wait_final(self, run_id: str, timeout: float = RUN_TIMEOUT):
        """Wait for a run started by a flow (not watched by anyone) to end; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(2)
        raise AssertionError(f"flow run {run_id} did not end within {timeout:.0f}s (state {run.state_name})")

    def artifacts(self, key: str, run_id: str | None = None) -> list:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

        flt = ArtifactFilter(key=ArtifactFilterKey(any_=[key]),
                             flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]) if run_id else None)
        with self.client() as client:
            return client.read_artifacts(artifact_filter=flt)

    def store(self):
        from mlcycle.tasks.storage import open_store

        return open_store(self.settings)

    def current_deployment(self):
        from mlcycle.tasks.rollout.orchestrate import read_current

        return read_current(self.store())


class Laps:
    """How long each stage took (wall clock), printed at the end: `pytest -s` shows it. Never asserted."""

    def __init__(self) -> None:
        self.last = self.start = time.monotonic()
        self.laps: list[tuple[str, float]] = []

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.laps.append((name, now - self.last))
        self.last = now

    def table(self) -> str:
        rows = [f"  {name:<44} {seconds:6.1f} s" for name, seconds in self.laps]
        return "\n".join(["life cycle stages:", *rows, f"  {'total':<44} {self.last - self.start:6.1f} s"])


def flow_run_id(cli_output: str) -> str:
    found = re.search(r"UUID: ([0-9a-f-]{36})", cli_output)
    assert found, f"no flow run id in the output of `prefect deployment run`:\n{cli_output[-2000:]}"
    return found.group(1)


def predict_version(url: str, settings, store) -> int:
    """The model version that answers v1's first canary row (every version here reads the same features)."""
    import httpx

    from mlcycle.tasks.registry.versions import model_name
    from mlcycle.tasks.serving.client import example_request

    response = httpx.post(f"{url}/predict", json=example_request(store, settings, model_name(settings), 1), timeout=30)
    assert response.status_code == 200, response.text
    return int(response.json()["model_version"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("lifecycle") / "home")
    try:
        yield stack
    finally:
        stack.mlcycle("down")


# --------------------------------------------------------------------------------------------------
# the life cycle
# --------------------------------------------------------------------------------------------------


def test_life_cycle_from_an_empty_store_through_the_deployments(stack):
    from mlcycle.tasks.demo import wait_for_logged_rows
    from mlcycle.tasks.inference_reader import read_inference_log
    from mlcycle.tasks.registry.versions import load_metadata
    from mlcycle.tasks.traffic import send_http

    settings, model = stack.settings, stack.settings.training.model_name
    laps = Laps()

    # -- the stack, deployed by the deploy workflow's command; the test drives every run itself -------
    up = stack.mlcycle_json("up")
    assert [s["name"] for s in up["services"]] == ["prefect-server", "prefect-worker"]
    deployed = run_workflow_step(workflow_step("deploy.yml", "Deploy every flow"), stack.api_env,
                                 {"PREFECT_API_KEY": "", "PREFECT_API_AUTH_STRING": "",
                                  "MLCYCLE_PROJECT_NAME": "mlcycle"})
    assert deployed.returncode == 0, (deployed.stdout + deployed.stderr)[-3000:]
    pause = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deployment", "schedule", "pause", "--all"],
                           capture_output=True, text=True, env=stack.api_env, timeout=120)
    assert pause.returncode == 0, (pause.stdout + pause.stderr)[-2000:]
    assert stack.mlcycle_json("status")["partitions"] == {"raw": 0, "validated": 0, "quarantine": 0}

    laps("stack up, deploy workflow, schedules paused")

    # -- ingest and validate: 30 days backfilled, one more day, one day re-validated ---------------------
    stack.run("backfill/mlcycle-range", f"start={BACKFILL[0]}", f"end={BACKFILL[1]}")
    daily = stack.run("ingest/mlcycle-daily", f"date={DAILY}")
    revalidated = stack.run("validate/mlcycle-revalidate", "date=2026-10-05")
    assert stack.mlcycle_json("status")["partitions"] == {"raw": 31, "validated": 31, "quarantine": 0}
    assert "PASSED" in stack.artifacts(f"validation-verdict-{DAILY}", daily)[0].data
    assert stack.artifacts("validation-2026-10-05", revalidated)  # the expectation table, re-run

    laps("backfill 30 days, ingest 1, revalidate 1")

    # -- training from CI: the train workflow's exact command ---------------------------------------------
    train_step = workflow_step("train.yml", "Train on the work pool")
    assert 'prefect deployment run "train/${MLCYCLE_PROJECT_NAME}-on-demand"' in train_step["run"]
    assert "--watch" in train_step["run"]
    # unset secrets arrive as ""; the project variable as its default
    no_secrets = {"PREFECT_API_KEY": "", "PREFECT_API_AUTH_STRING": "", "MLCYCLE_PROJECT_NAME": "mlcycle"}
    refused = run_workflow_step(train_step, stack.api_env, {**no_secrets, "TRAIN_PARAMETERS": '{"end": "2020-01-10"}'})
    assert refused.returncode == 1, "a failed training must fail the CI step"
    assert "Failed" in refused.stdout + refused.stderr
    failed_run = stack.flow_run(flow_run_id(refused.stdout))
    assert failed_run.state.is_failed() and "no validated partitions in the training window" in failed_run.state.message

    started = dt.datetime.now(dt.UTC)
    trained = run_workflow_step(train_step, stack.api_env,
                                {**no_secrets, "TRAIN_PARAMETERS": json.dumps({"end": CHAMPION_WINDOW_END})})
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    assert "Completed" in trained.stdout
    first_train = flow_run_id(trained.stdout)
    champion = load_metadata(stack.store(), model, "champion")
    assert champion.version == 1 and champion.lineage.flow_run_id == first_train
    assert champion.lineage.partitions[-1].date.isoformat() == CHAMPION_WINDOW_END
    assert "promote" in stack.artifacts(f"{model}-gate-decision", first_train)[0].description

    # the promotion started rollout/mlcycle-on-demand by itself: package, test-serve, blue/green switch
    chained = [r for r in stack.runs_of("rollout/mlcycle-on-demand") if r.created >= started]
    assert len(chained) == 1 and chained[0].parameters == {"version": 1}
    assert stack.wait_final(str(chained[0].id)).state.is_completed()
    live = stack.current_deployment()
    assert live.status == "live" and live.model_version == "1" and live.flow_run_id == str(chained[0].id)
    url = live.endpoint_url
    assert url == f"http://127.0.0.1:{settings.rollout.endpoint_port}"
    assert predict_version(url, settings, stack.store()) == 1

    laps("CI train (refused + champion), chained rollout")

    # -- packaging and a rollout by hand --------------------------------------------------------------------
    packaged = stack.run("package/mlcycle-on-demand")
    assert stack.artifacts(f"{model}-package", packaged)
    rolled = stack.run("rollout/mlcycle-on-demand", f"bento_tag={live.bento_tag}")  # the packaged bento, again
    again = stack.current_deployment()
    assert again.flow_run_id == rolled and again.previous_id == live.id and again.model_version == "1"
    assert stack.artifacts("deployment", rolled)
    assert predict_version(url, settings, stack.store()) == 1

    laps("package, rollout by hand")

    # -- traffic through the endpoint, logged by the service; labels for it -----------------------------------
    def traffic(days: list[dt.date]) -> tuple[str, str]:
        window_start = dt.datetime.now(dt.UTC)
        sent = send_http(url, settings, days, rows_per_day=ROWS_PER_DAY)
        assert sent["failed"] == 0 and sent["rows"] == ROWS_PER_DAY * len(days), sent
        # the service's log flushes on a timer: wait until every row sent is in it
        wait_for_logged_rows(stack.store(), window_start, ROWS_PER_DAY * len(days), timeout_seconds=120)
        return window_start.isoformat(), dt.datetime.now(dt.UTC).isoformat()

    pre_window = traffic(PRE_DRIFT_DAYS)
    drift_window = traffic(DRIFTED_DAYS)
    logged = read_inference_log(stack.store())  # also holds the canary rows of test-serving and rollouts
    day_of_id = logged[settings.dataset.id_column].astype(str).str[:8]
    per_day = day_of_id.value_counts()
    assert all(per_day.get(f"{d:%Y%m%d}") == ROWS_PER_DAY for d in PRE_DRIFT_DAYS + DRIFTED_DAYS), per_day
    assert set(logged["model_version"].astype(str)) == {"1"} and set(logged["endpoint"]) >= {"predict"}
    labels = stack.mlcycle_json("labels", "--simulate")
    assert labels["rows"] >= ROWS_PER_DAY * 6 and labels["keys"] == ["request_id", "row"]

    laps("traffic (2 x 3 days), labels")

    # -- monitoring: quiet before the drift date, one retraining after it ----------------------------------------
    quiet = stack.run("monitor/mlcycle-hourly", f"start={pre_window[0]}", f"end={pre_window[1]}")
    quiet_decision = stack.artifacts("monitoring-decision", quiet)[0].data
    assert "**Trigger:** not-warranted" in quiet_decision, quiet_decision
    assert len(stack.runs_of(TRAIN)) == 2  # the refused one and the champion's: nothing new

    drifted = stack.run("monitor/mlcycle-hourly", f"start={drift_window[0]}", f"end={drift_window[1]}")
    decision = stack.artifacts("monitoring-decision", drifted)[0].data
    assert "**Trigger:** triggered" in decision and "debt_ratio" in decision, decision
    drift_table = stack.artifacts("monitoring-drift", drifted)[0].data
    drift_rows = json.loads(drift_table) if isinstance(drift_table, str) else drift_table
    assert {r["feature"] for r in drift_rows if r["drifted"]} >= {"debt_ratio"}
    retrains = [r for r in stack.runs_of(TRAIN) if "retrain" in r.tags]
    assert len(retrains) == 1 and len(stack.runs_of(TRAIN)) == 3
    assert "debt_ratio" in retrains[0].parameters["reason"]

    repeat = stack.run("monitor/mlcycle-hourly", f"start={drift_window[0]}", f"end={drift_window[1]}")
    assert "**Trigger:** already-triggered" in stack.artifacts("monitoring-decision", repeat)[0].data
    assert len(stack.runs_of(TRAIN)) == 3  # the same window never starts a second training

    # the triggered training went through the gate, promoted or not
    retrain = stack.wait_final(str(retrains[0].id))
    assert retrain.state.is_completed(), retrain.state.message
    gate = stack.artifacts(f"{model}-gate-decision", str(retrain.id))
    assert len(gate) == 1 and gate[0].description.startswith(f"{model} v2: ")
    challenger = load_metadata(stack.store(), model, 2)
    assert challenger.lineage.flow_run_id == str(retrain.id)
    assert challenger.gate.champion_version == 1  # compared with the champion on the same test rows
    assert challenger.lineage.partitions[-1].date.isoformat() == DAILY  # trained on the latest data
    print(f"retraining: v2 {challenger.gate.summary}")
    if challenger.gate.promote:  # the promotion rolled v2 out, as it did v1
        rollout_v2 = [r for r in stack.runs_of("rollout/mlcycle-on-demand") if r.parameters == {"version": 2}]
        assert len(rollout_v2) == 1 and stack.wait_final(str(rollout_v2[0].id)).state.is_completed()
        assert predict_version(url, settings, stack.store()) == 2
    else:  # refused: nothing was rolled out; v1 is still the champion, still live, and still answers
        assert [r for r in stack.runs_of("rollout/mlcycle-on-demand") if r.parameters == {"version": 2}] == []
        assert load_metadata(stack.store(), model, "champion").version == 1
        current = stack.current_deployment()
        assert current.id == again.id and current.status == "live" and current.model_version == "1"
        assert predict_version(url, settings, stack.store()) == 1

    laps("monitor x3, retraining through the gate")

    # -- rollback: the deployment live before the current one serves again --------------------------------------
    before = stack.current_deployment()
    rolled_back = stack.run("rollout/mlcycle-rollback")
    after = stack.current_deployment()
    from mlcycle.tasks.rollout.orchestrate import find

    previous = find(stack.store(), before.previous_id)
    assert after.kind == "rollback" and after.rollback_of == before.id and after.flow_run_id == rolled_back
    assert after.bento_tag == previous.bento_tag and after.model_version == previous.model_version
    assert predict_version(url, settings, stack.store()) == int(previous.model_version)

    laps("rollback")

    # -- every deployment ran; the UI holds the evidence ------------------------------------------------------------
    for name in ("ingest/mlcycle-daily", "backfill/mlcycle-range", "validate/mlcycle-revalidate", TRAIN,
                 "package/mlcycle-on-demand", "rollout/mlcycle-on-demand", "rollout/mlcycle-rollback",
                 "monitor/mlcycle-hourly"):
        assert any(r.state.is_completed() for r in stack.runs_of(name)), f"{name} never completed a run"
    print(laps.table())
    stack.lived = True


@NEEDS_CHROMIUM
def test_the_screenshot_script_captures_the_stacks_ui(stack, tmp_path):
    """docs/screenshots.py against the life cycle's stack: every page rendered with its data, as PNG."""
    from PIL import Image, ImageStat

    if not stack.lived:
        pytest.fail("the life-cycle test did not complete in this session, so there are no runs to photograph "
                    "(run the whole module)")
    out = tmp_path / "img"
    shots = subprocess.run([sys.executable, str(ROOT / "docs" / "screenshots.py"), "--ui",
                            f"http://127.0.0.1:{stack.prefect_port}", "--out", str(out), "--timeout", "120"],
                           capture_output=True, text=True, env=stack.env, cwd=ROOT, timeout=900)
    assert shots.returncode == 0, (shots.stdout + shots.stderr)[-3000:]
    expected = {"deployments.png", "train-run-artifacts.png", "gate-decision.png", "monitor-decision.png",
                "drift-report.png", "artifacts.png"}
    assert {p.name for p in out.iterdir()} == expected
    for path in out.iterdir():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 1440, path.name
            assert ImageStat.Stat(image.convert("L")).stddev[0] > 5, f"{path.name} is a blank page"

    missing = subprocess.run([sys.executable, str(ROOT / "docs" / "screenshots.py"), "--ui",
                              f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path / "none")],
                             capture_output=True, text=True, env=stack.env, cwd=ROOT, timeout=120)
    assert missing.returncode == 1 and "no Prefect server answers at" in missing.stderr
    assert not (tmp_path / "none").exists()


def expected_problems() -> list:
    """Problems the life cycle provokes on purpose, each with its reason; anything else in a service log fails."""
    from tests.support.logs import SQLITE_HEARTBEAT_RACE, SQLITE_QUEUE_POLL_LOCK, Expected

    return [
        SQLITE_HEARTBEAT_RACE,  # accounted for only with the worker proven back online (assert_workers_online)
        SQLITE_QUEUE_POLL_LOCK,  # ... and with the work queues proven polled since (assert_work_queues_ready)
        Expected(r"TrainingDataError: no validated partitions in the training window \(last \d+ validated days "
                 r"up to 2020-01-10\)",
                 "step 3: the train workflow's command with a window that holds no data must fail, naming why "
                 "(the worker streams the flow run's task and flow failure)", log="prefect-worker.log"),
    ]


def test_service_logs_hold_no_traceback_the_test_did_not_provoke(stack):
    """Prefect server, worker (and the flow runs it streams), nginx and every `bentoml serve`: clean logs."""
    from tests.support.logs import assert_work_queues_ready, assert_workers_online, unexpected_problems

    if not stack.lived:
        pytest.fail("the life-cycle test did not complete in this session (run the whole module)")
    assert_workers_online(stack.api)
    assert_work_queues_ready(stack.api)
    left = unexpected_problems(stack.settings.run_dir, expected_problems())
    assert not left, "unexpected problems in the service logs:\n" + "\n\n".join(str(p)[:3000] for p in left[:5])
