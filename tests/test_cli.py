"""The `mlcycle` CLI: exit codes, one-line errors on stderr, --json on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.env import ROOT, run_cli


@pytest.mark.parametrize("args, fragment", [
    (["ingest", "--date", "2026-02-30"], "invalid date '2026-02-30': expected a calendar date as YYYY-MM-DD"),
    (["ingest", "--date", "tomorrow"], "invalid date 'tomorrow'"),
    (["ingest"], "give --date YYYY-MM-DD"),
    (["ingest", "--date", "2026-10-01", "--source", "ftp"], "--source must be 'simulator' or 'landing'"),
    (["ingest", "--start", "2026-10-05", "--end", "2026-10-01"], "before start"),
    (["partitions", "--zone", "elsewhere"], "--zone must be raw, validated or quarantine"),
    (["no-such-command"], "No such command"),
])
def test_bad_usage_exits_2_with_one_line_reason(monkeypatch, capsys, env_settings, args, fragment):
    env_settings()
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2, (out, err)
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("mlcycle: error:")


def test_bad_configuration_exits_2_naming_the_key(monkeypatch, capsys, env_settings):
    env_settings()
    monkeypatch.setenv("MLCYCLE_STORE", "tape")
    from mlcycle.tasks.settings import get_settings

    get_settings.cache_clear()
    code, _, err = run_cli(monkeypatch, capsys, "partitions")
    assert code == 2 and "store" in err


@pytest.mark.flow
def test_ingest_json_prints_the_manifest(monkeypatch, capsys, env_settings, prefect_harness):
    env_settings(simulator__rows_per_day="300")
    code, out, err = run_cli(monkeypatch, capsys, "ingest", "--date", "2026-10-01", "--json")
    assert code == 0, err
    manifest = json.loads(out)
    assert manifest["zone"] == "validated" and manifest["rows"] == 300 and len(manifest["data_sha256"]) == 64
    code, out, _ = run_cli(monkeypatch, capsys, "partitions", "--json")
    assert code == 0 and [m["date"] for m in json.loads(out)] == ["2026-10-01"]


@pytest.mark.flow
def test_quarantined_ingest_exits_1_naming_the_expectation(monkeypatch, capsys, env_settings, prefect_harness,
                                                           tmp_path):
    import datetime as dt

    from mlcycle.tasks.simulator import simulate_batch

    settings = env_settings(simulator__rows_per_day="300")
    frame = simulate_batch(dt.date(2026, 10, 1), settings.simulator, settings.dataset).frame
    frame.loc[4, "loan_purpose"] = "yacht"
    (tmp_path / "in").mkdir()
    frame.to_csv(tmp_path / "in" / "loans_date=2026-10-01.csv", index=False)
    env_settings(simulator__rows_per_day="300", landing_path=str(tmp_path / "in"))
    code, _, err = run_cli(monkeypatch, capsys, "ingest", "--date", "2026-10-01", "--source", "landing")
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("mlcycle: error: ValidationFailed") and "loan_purpose" in last and "yacht" in last


@pytest.mark.flow
def test_backfill_json_lists_every_date(monkeypatch, capsys, env_settings, prefect_harness):
    env_settings(simulator__rows_per_day="300")
    code, out, err = run_cli(monkeypatch, capsys, "ingest", "--start", "2026-10-01", "--end", "2026-10-03",
                             "--json")
    assert code == 0, err
    assert [o["status"] for o in json.loads(out)] == ["validated"] * 3


@pytest.mark.flow
def test_backfill_progress_bar_follows_the_runs_progress_artifact(monkeypatch, capsys, env_settings,
                                                                  prefect_harness, tmp_path):
    """The bar shows Prefect's own progress (the run's `backfill-progress` artifact) while the flow runs in a
    worker thread; a backfill that fails still moves the bar to the end, then exits 1 naming the bad date."""
    import datetime as dt

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort
    from rich.progress import Progress

    from mlcycle.tasks.simulator import simulate_batch

    settings = env_settings(simulator__rows_per_day="300")
    (tmp_path / "in").mkdir()
    for day in (dt.date(2026, 10, 1), dt.date(2026, 10, 2)):  # 2026-10-03 has no file
        frame = simulate_batch(day, settings.simulator, settings.dataset).frame
        frame.to_parquet(tmp_path / "in" / f"date={day}.parquet")
    env_settings(simulator__rows_per_day="300", landing_path=str(tmp_path / "in"))
    shown = []
    update = Progress.update

    def recording(self, task_id, **fields):
        shown.append(fields)
        return update(self, task_id, **fields)

    monkeypatch.setattr(Progress, "update", recording)
    code, _, err = run_cli(monkeypatch, capsys, "ingest", "--start", "2026-10-01", "--end", "2026-10-03",
                           "--source", "landing")
    assert code == 1
    assert "backfill incomplete: 2 validated, 0 quarantined, 1 failed of 3 dates" in err
    assert "2026-10-03 failed: ingest: no data for 2026-10-03" in err
    completed = [fields["completed"] for fields in shown]
    assert completed and completed == sorted(completed) and completed[-1] == 100.0
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=["backfill-progress"])), sort=ArtifactSort.CREATED_DESC, limit=1)
    assert artifact.data == 100.0 and shown[-1]["description"] == artifact.description
    assert artifact.description.startswith("backfill 2026-10-01..2026-10-03, last: 2026-10-0")


def test_console_script_is_installed_and_answers_help():
    """The `mlcycle` script pip installed beside this interpreter (no fallback: a missing script fails)."""
    from importlib.metadata import entry_points

    exe = Path(sys.executable).parent / "mlcycle"
    assert exe.is_file(), f"no console script {exe}: install the project (make install, or pip install -e .)"
    (script,) = entry_points(group="console_scripts", name="mlcycle")
    assert script.value == "mlcycle.flows.cli:console"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    for command in ("ingest", "validate", "partitions", "train", "models", "package", "serve", "labels", "rollout",
                    "deployments", "monitor", "demo", "up", "down", "status"):
        assert f" {command} " in result.stdout, command


def test_python_m_runs_the_same_cli(tmp_path):
    """`python -m mlcycle.flows.cli` (what the subprocess tests run) is the console script's main()."""
    env = {**os.environ, "MLCYCLE_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-m", "mlcycle.flows.cli", "ingest", "--date", "2026-02-30"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("mlcycle: error: invalid date '2026-02-30'") and result.stdout == ""


@pytest.mark.flow
def test_a_flow_command_exits_at_once_with_its_logs_and_final_state_on_the_server(tmp_path, prefect_harness):
    """The console script skips the interpreter's teardown (flows/cli: ``console``) and loses nothing for it:
    the exit code, the whole JSON on stdout, the run COMPLETED on the server with its last log line (the
    engine's "Finished in state Completed()")."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL

    env = {"PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_LEVEL": "INFO",
           "MLCYCLE_SIMULATOR__ROWS_PER_DAY": "300"}
    result = _mlcycle(tmp_path, "ingest", "--date", "2026-10-01", "--json", env=env)
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["flow_run_id"]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    assert run.state.is_completed()
    assert logs[-1].message.startswith("Finished in state Completed"), [log.message for log in logs]


def _mlcycle(tmp_path, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m mlcycle.flows.cli ARGS` in a fresh process with its own home and no Prefect API configured."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLCYCLE_"))}
    clean.update({"MLCYCLE_HOME": str(tmp_path / "home"), "MLCYCLE_CONFIG": str(ROOT / "mlcycle.yaml"), **(env or {})})
    return subprocess.run([sys.executable, "-m", "mlcycle.flows.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=clean, timeout=timeout)


def test_a_missing_landing_path_is_one_line_before_anything_starts(tmp_path):
    result = _mlcycle(tmp_path, "ingest", "--date", "2026-10-01", "--source", "landing")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == ["mlcycle: error: source 'landing' needs MLCYCLE_LANDING_PATH (a folder or "
                                          "s3://bucket/prefix)"]
    assert not (tmp_path / "home" / "run").exists()  # no Prefect server was started, nor anything else


def test_debug_adds_the_traceback_before_the_same_line(tmp_path):
    result = _mlcycle(tmp_path, "--debug", "ingest", "--date", "2026-10-01", "--source", "landing")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):" and "UsageFailure" in result.stderr
    assert lines[-1].startswith("mlcycle: error: source 'landing' needs MLCYCLE_LANDING_PATH")


@pytest.mark.parametrize("args", [("models", "list"), ("models", "show", "champion"), ("partitions",), ("status",),
                                  ("deployments", "list"), ("deployments", "current"), ("labels", "--simulate")])
def test_commands_that_run_no_flow_import_no_prefect_and_start_no_server(tmp_path, args):
    """What makes them answer at once: no Prefect (a second), no scikit-learn (1.5 s) and no Great Expectations
    import, no server (seconds more)."""
    probe = ("import sys\nfrom mlcycle.flows.cli import main\nsys.argv = ['mlcycle', *sys.argv[1:]]\n"
             "try:\n    main()\nfinally:\n    heavy = {'prefect', 'sklearn', 'great_expectations'} & "
             "{m.split('.')[0] for m in sys.modules}\n    print('heavy imports:', sorted(heavy), file=sys.stderr)\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLCYCLE_"))}
    clean.update({"MLCYCLE_HOME": str(tmp_path / "home"), "MLCYCLE_CONFIG": str(ROOT / "mlcycle.yaml")})
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=ROOT, env=clean,
                            timeout=120)
    assert result.stderr.strip().splitlines()[-1] == "heavy imports: []", result.stderr
    assert not (tmp_path / "home" / "run").exists()


def test_monitor_help_documents_its_exit_codes():
    result = subprocess.run([sys.executable, "-m", "mlcycle.flows.cli", "monitor", "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "3 retraining warranted but could not be started" in text and "mlcycle up" in text


@pytest.mark.flow
def test_a_quarantined_batch_is_one_line_on_stderr_not_prefects_traceback(tmp_path, prefect_harness):
    """A real process against the test server: Prefect's console is quiet, the run's failure is one line."""
    import datetime as dt

    from prefect.settings import PREFECT_API_URL

    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.simulator import simulate_batch

    settings = load_settings(home=tmp_path / "home")
    frame = simulate_batch(dt.date(2026, 10, 1), settings.simulator, settings.dataset, rows=300).frame
    frame.loc[4, settings.dataset.categorical_features[0].name] = "nowhere"
    (tmp_path / "in").mkdir()
    frame.to_csv(tmp_path / "in" / "export_date=2026-10-01.csv", index=False)
    env = {"PREFECT_API_URL": PREFECT_API_URL.value(), "MLCYCLE_LANDING_PATH": str(tmp_path / "in")}
    result = _mlcycle(tmp_path, "ingest", "--date", "2026-10-01", "--source", "landing", env=env)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("mlcycle: error: ValidationFailed: 2026-10-01: batch quarantined") and "nowhere" in line
    verbose = _mlcycle(tmp_path, "-v", "ingest", "--date", "2026-10-01", "--source", "landing",
                       env={**env, "PREFECT_LOGGING_LEVEL": "INFO"})  # the tests' environment says WARNING
    assert verbose.returncode == 1 and "| INFO    | Flow run" in verbose.stderr  # -v: Prefect's own lines are back
