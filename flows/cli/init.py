"""``mlcycle init``: a project config from one of the user's files, printing every guess and why.

Runs no flow and starts no Prefect server. The config goes to ``MLCYCLE_CONFIG`` when set, else
``./mlcycle.yaml``; an existing file is never overwritten (exit 2). Exit 2 too when the file cannot be
profiled as asked (no ``--target``: the candidates are listed).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mlcycle.flows.cli.common import JSON_OPT, UsageFailure, emit

commands = typer.Typer()


@commands.command()
def init(
    source: Path = typer.Option(..., "--from", help="a CSV or Parquet file of your data (one export)"),
    target: str = typer.Option(None, "--target", help="the column to predict"),
    time: str = typer.Option(None, "--time", help="the timestamp column (default: a datetime column, else the "
                                                  "file's date)"),
    id_column: str = typer.Option(None, "--id", help="the id column (default: a unique text column, else generated)"),
    task: str = typer.Option(None, "--task", help="binary | multiclass | regression (default: guessed from the "
                                                  "target)"),
    name: str = typer.Option(None, "--name", help="the dataset's name (default: the file's name)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Profile a file and write a commented project config (MLCYCLE_CONFIG, else ./mlcycle.yaml)."""
    from mlcycle.tasks.config_file import ConfigExists
    from mlcycle.tasks.profiling import ProfileError
    from mlcycle.tasks.project import init_project
    from mlcycle.tasks.settings import CONFIG_ENV, DEFAULT_CONFIG_FILE

    config = Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE)
    try:
        report = init_project(source, config, target=target, time=time, id_column=id_column, task=task, name=name)
    except (ConfigExists, ProfileError) as exc:
        raise UsageFailure(str(exc)) from None
    landing = "" if any(d.subject == "landing_path" and d.choice != "not set" for d in report.decisions) else \
        "MLCYCLE_LANDING_PATH=<folder of date=YYYY-MM-DD exports> "
    emit(as_json, report.model_dump(mode="json"),
         "\n".join([*(d.line() for d in report.decisions),
                    f"next: check {config}, then {landing}mlcycle ingest --date YYYY-MM-DD"]))
