"""`mlcycle init` on real tables: a config that loads, with the right task and target, every guess explained."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlcycle.tasks.config_file import ConfigExists, render_config, settings_document, template_comments, write_new
from mlcycle.tasks.profiling import ProfileError, outward_range
from mlcycle.tasks.project import init_project
from mlcycle.tasks.settings import (
    DriftSettings,
    GateSettings,
    MonitorSettings,
    RetriesSettings,
    RolloutSettings,
    ServingSettings,
    TrainingSettings,
    ValidationSettings,
    load_settings,
)
from mlcycle.tasks.settings.naming import endpoint_port
from mlcycle.tasks.settings.problem import DEFAULT_CEILINGS, DEFAULT_FLOORS, DEFAULT_PRIMARY
from tests.support.datasets import TABLES

# (table, file format): each task once as CSV, and the multiclass table as Parquet too
EXPORTS = [("fair", "csv"), ("anes96", "csv"), ("randhie", "csv"), ("anes96", "parquet")]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Each real table exported whole, as a user would hand it to `mlcycle init`."""
    folder = tmp_path_factory.mktemp("exports")
    out = {}
    for name, fmt in EXPORTS:
        path = folder / f"{name}.{fmt}"
        frame = TABLES[name]().frame
        frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
        out[(name, fmt)] = path
    return out


def loaded(monkeypatch, config: Path):
    monkeypatch.setenv("MLCYCLE_CONFIG", str(config))
    return load_settings()


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`mlcycle ARGS` in-process through the console entry point: (exit code, stdout, stderr)."""
    from mlcycle.flows.cli import main

    monkeypatch.setattr(sys, "argv", ["mlcycle", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name, fmt", EXPORTS)
def test_init_writes_a_config_that_loads_with_the_task_and_target(exports, tmp_path, monkeypatch, name, fmt):
    table = TABLES[name]()
    config = tmp_path / "mlcycle.yaml"
    report = init_project(exports[(name, fmt)], config, target=table.target)
    settings = loaded(monkeypatch, config)

    spec = settings.dataset
    assert (report.task, spec.task, spec.target, spec.name) == (table.task, table.task, table.target, name)
    assert settings.training.model_name == f"{name}-{table.target}" and settings.project_name == name
    assert settings.ingest.source == "landing" and settings.simulator.drift == []
    assert (settings.ingest.ids, settings.ingest.timestamps) == ("generate", "file_date")
    # every column but the target is a feature, the leaky `affairs` of fair included: init does not judge
    assert spec.feature_names == [c for c in table.frame.columns if c != table.target]
    for coded in table.categorical:
        assert spec.feature(coded).kind == "categorical"
    # categories and classes written as YAML numbers, kept as canonical texts once loaded
    written = yaml.safe_load(config.read_text())["dataset"]
    categorical = [f for f in written["features"] if f["kind"] == "categorical"]
    assert categorical and all(isinstance(c, int) for f in categorical for c in f["categories"])
    if table.task == "regression":
        assert spec.class_labels is None and spec.target_min <= table.frame[table.target].min()
        assert spec.target_max >= table.frame[table.target].max()
    else:
        assert all(isinstance(c, int) for c in written["classes"])
        assert set(spec.class_labels) == {str(v) for v in table.frame[table.target].unique()}
    # every other section at its default (the gate and the monitor resolved for the task; the rollout's
    # deployment and port, like the monitor's train deployment, derived from the project init named)
    project = settings.project_name
    assert project != "mlcycle" and settings.monitor.train_deployment == f"train/{project}-on-demand"
    rollout = RolloutSettings(deployment=f"rollout/{project}-on-demand", endpoint_port=endpoint_port(project))
    serving = ServingSettings(port=endpoint_port(project) + 5, bento_name=f"{project.lower()}-model")
    for section, default in [("validation", ValidationSettings()), ("rollout", rollout),
                             ("serving", serving), ("drift", DriftSettings()),
                             ("retries", RetriesSettings())]:
        assert getattr(settings, section) == default, section
    assert settings.training == TrainingSettings(model_name=settings.training.model_name)
    primary = DEFAULT_PRIMARY[table.task]
    assert settings.gate == GateSettings(primary_metric=primary, floors=DEFAULT_FLOORS[table.task],
                                         ceilings=DEFAULT_CEILINGS[table.task])
    assert settings.monitor == MonitorSettings(performance_metric=primary,
                                               train_deployment=f"train/{project}-on-demand")
    # round trip: the file says exactly what the loaded settings hold
    assert yaml.safe_load(config.read_text()) == settings_document(settings)


def test_the_written_file_carries_the_repositorys_comments_and_the_task_metrics(exports, tmp_path):
    config = tmp_path / "mlcycle.yaml"
    init_project(exports[("randhie", "csv")], config, target="mdvis")
    text = config.read_text()
    assert "registry name: models/<model_name>/ in the object store" in text  # from the repository's file
    assert "# Retries (tasks/retry.py)" in text
    primary = next(line for line in text.splitlines() if line.strip().startswith("primary_metric:"))
    assert "rmse" in primary and "roc_auc" not in primary
    assert "# mdvis" not in text and "# lpi: 619 distinct numbers, observed 0..7.1637" in text


def test_the_writer_round_trips_the_repositorys_own_config(tmp_path, monkeypatch):
    demo = load_settings()  # the repository's mlcycle.yaml: text categories, descriptions, critical, drift events
    copy = tmp_path / "copy.yaml"
    write_new(copy, render_config(settings_document(demo), template_comments()))
    assert loaded(monkeypatch, copy).model_dump() == demo.model_dump()


def test_init_says_why_for_every_guess(exports, tmp_path):
    report = init_project(exports[("fair", "csv")], tmp_path / "mlcycle.yaml", target="had_affair")
    lines = {d.subject: d.line() for d in report.decisions}
    assert lines["dataset.task"] == "dataset.task: binary (guessed from 'had_affair': two values)"
    assert lines["dataset.positive_label"] == "dataset.positive_label: 1 (the larger value of 0, 1)"
    assert "categorical [1, 2, 3, 4, 5, 6]" in lines["occupation"] and "at most 10: codes" in lines["occupation"]
    assert "numeric float 0..64" in lines["affairs"] and "observed 0..57.6" in lines["affairs"]
    assert "generated" in lines["dataset.id_column"] and "file's date" in lines["dataset.timestamp_column"]


def test_init_finds_an_id_and_a_time_column_and_the_landing_path(tmp_path, monkeypatch):
    table = TABLES["anes96"]()
    frame = table.frame.iloc[:300].copy()
    frame.insert(0, "respondent", [f"r{i:04d}" for i in range(len(frame))])
    frame.insert(1, "interviewed_at", pd.date_range("2026-10-01", periods=len(frame), freq="min", tz="UTC")
                 .strftime("%Y-%m-%dT%H:%M:%SZ"))
    source = tmp_path / "landing" / "date=2026-10-01" / "export.csv"
    source.parent.mkdir(parents=True)
    frame.to_csv(source, index=False)
    config = tmp_path / "project.yaml"
    report = init_project(source, config, target="PID", name="election")
    settings = loaded(monkeypatch, config)
    assert (settings.dataset.id_column, settings.dataset.timestamp_column) == ("respondent", "interviewed_at")
    assert (settings.ingest.ids, settings.ingest.timestamps) == ("column", "column")
    assert settings.landing_path == str(tmp_path.resolve() / "landing")
    assert settings.dataset.name == "election" and report.dataset == "election"


def test_init_refuses_a_target_it_cannot_declare(exports, tmp_path):
    with pytest.raises(ProfileError, match="--task binary needs a target with two values; 'PID' has 7"):
        init_project(exports[("anes96", "csv")], tmp_path / "a.yaml", target="PID", task="binary")
    with pytest.raises(ProfileError, match="--target 'nope' is not a column of fair.csv"):
        init_project(exports[("fair", "csv")], tmp_path / "b.yaml", target="nope")
    assert not (tmp_path / "a.yaml").exists() and not (tmp_path / "b.yaml").exists()


def test_ranges_are_widened_and_rounded_outward():
    assert outward_range(17.5, 42.0, whole=False) == (15.0, 45.0)
    assert outward_range(0.0, 7300.0, whole=True) == (0.0, 8100.0)  # no negatives: never below 0
    assert outward_range(-3.2, 4.1, whole=False) == (-4.0, 4.9)
    low, high = outward_range(0.0, 7.163699, whole=False)
    assert (low, high) == (0.0, 7.9)


def test_cli_init_refuses_to_overwrite_naming_the_file(exports, tmp_path, monkeypatch, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("project_name: mine\n")
    monkeypatch.setenv("MLCYCLE_CONFIG", str(config))
    code, out, err = cli(monkeypatch, capsys, "init", "--from", str(exports[("fair", "csv")]), "--target", "had_affair")
    assert code == 2 and out == ""
    assert err.startswith("mlcycle: error:") and len(err.strip().splitlines()) == 1
    assert str(config) in err and "never overwrites" in err
    assert config.read_text() == "project_name: mine\n"
    with pytest.raises(ConfigExists):
        init_project(exports[("fair", "csv")], config, target="had_affair")


def test_cli_init_without_target_lists_the_candidates(exports, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLCYCLE_CONFIG", str(tmp_path / "mlcycle.yaml"))
    code, out, err = cli(monkeypatch, capsys, "init", "--from", str(exports[("fair", "csv")]))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "give the target column with --target" in err
    assert "had_affair (binary, 2 values)" in err and "affairs (regression, 77 values)" in err
    assert not (tmp_path / "mlcycle.yaml").exists()


def test_cli_init_prints_one_line_per_decision_and_json(exports, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLCYCLE_CONFIG", str(tmp_path / "one.yaml"))
    code, out, err = cli(monkeypatch, capsys, "init", "--from", str(exports[("randhie", "csv")]), "--target", "mdvis")
    assert code == 0, err
    assert "dataset.task: regression (guessed from 'mdvis'" in out and "lpi: numeric float" in out
    assert out.strip().splitlines()[-1].startswith("next: check")
    monkeypatch.setenv("MLCYCLE_CONFIG", str(tmp_path / "two.yaml"))
    code, out, _ = cli(monkeypatch, capsys, "init", "--from", str(exports[("anes96", "parquet")]), "--target", "PID",
                       "--json")
    report = json.loads(out)
    assert code == 0 and report["task"] == "multiclass" and report["config"] == str(tmp_path / "two.yaml")
    assert {"subject": "dataset.classes", "choice": "0, 1, 2, 3, 4, 5, 6",
            "reason": "the 7 values of 'PID' in the file"} in report["decisions"]
