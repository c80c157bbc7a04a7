"""What every ``mlcycle`` command shares: output, usage errors, settings read at the edge, the local stack.

* :func:`emit` prints a command's result: its JSON on stdout with ``--json`` (:data:`JSON_OPT`), else the
  human lines;
* :class:`UsageFailure` is bad arguments (exit 2); :func:`check_dates` turns malformed or reversed date
  arguments into one;
* :func:`read_settings` is where the CLI reads the configuration, once per command;
* :func:`use_local_stack` points the flows at the stack `mlcycle up` started;
* :func:`one_line` is the single line ``main()`` prints on stderr for any failure;
* :func:`run_with_progress` runs a flow while a bar on stderr follows its backfill progress artifacts.
"""

from __future__ import annotations

import json
import os
from typing import Any

import typer

JSON_OPT = typer.Option(False, "--json", help="print machine-readable JSON on stdout")


class UsageFailure(Exception):
    """Bad arguments or configuration: exit code 2."""


def read_settings():
    """The settings (cached by ``get_settings``), read here at the edge and passed down."""
    from mlcycle.tasks.settings import get_settings

    return get_settings()


def emit(as_json: bool, payload: Any, human: str) -> None:
    """A command's result: ``payload`` as JSON on stdout with ``--json``, else the ``human`` lines."""
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))
    else:
        typer.echo(human)


def use_local_stack() -> None:
    """Point Prefect at the stack `mlcycle up` started, unless PREFECT_API_URL is already set."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    if os.environ.get("PREFECT_API_URL"):
        return
    from mlcycle.tasks import stack

    settings = read_settings()
    server = stack.read_service(settings, "prefect-server")
    if server and server.alive() and stack.healthy(f"{stack.prefect_api_url()}/health"):
        os.environ["PREFECT_API_URL"] = stack.prefect_api_url()
        os.environ.setdefault("PREFECT_HOME", str((settings.home / "prefect").resolve()))


def check_dates(date: str | None, start: str | None = None, end: str | None = None) -> None:
    """Date arguments are usage errors (exit 2) when malformed or reversed."""
    from mlcycle.tasks.sources import SourceError, date_range, parse_date

    try:
        for value in (date, start, end):
            if value:
                parse_date(value)
        if start and end:
            date_range(parse_date(start), parse_date(end))
    except SourceError as exc:
        raise UsageFailure(str(exc)) from None


def one_line(exc: BaseException | str) -> str:
    """The failure as one line (whitespace folded, at most 2000 characters), for stderr."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:2000]


def run_with_progress(flow_fn, show: bool, **parameters):
    """Run ``flow_fn(**parameters)`` while a bar on stderr follows the backfill progress its run reports.

    The Prefect UI and the bar read the same thing: the ``backfill-progress`` artifact (percent of the
    backfill's tasks done, and the last date finished) of the run itself or of a backfill it runs as a
    subflow (the demo). The flow runs in a worker thread under a unique run name, so its artifacts are found
    by that name; the bar polls them until the thread ends, then this returns the flow's result or raises
    its error. No module-level hook: the flow knows nothing about the bar.
    """
    import contextvars
    import threading
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterParentFlowRunId,
    )
    from prefect.client.schemas.sorting import ArtifactSort
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from mlcycle.flows.ingest import PROGRESS_ARTIFACT

    run_name = f"{flow_fn.name}-{uuid.uuid4().hex[:8]}"
    ended: dict[str, Any] = {}

    def run() -> None:
        try:
            ended["result"] = flow_fn.with_options(flow_run_name=run_name)(**parameters)
        except BaseException as exc:  # handed to the caller's thread below
            ended["error"] = exc

    # The thread runs in a copy of this context, so it talks to the same Prefect API as the polling below.
    worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), name=run_name, daemon=True)
    progress = ArtifactFilter(key=ArtifactFilterKey(any_=[PROGRESS_ARTIFACT]))
    bars: dict = {}  # artifact id -> bar task
    with Progress(BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                  disable=not show, transient=False, console=Console(stderr=True)) as bar, \
            get_client(sync_client=True) as client:
        worker.start()
        run_id = None
        while True:
            finished = not worker.is_alive()  # read before polling, so the last poll sees the last update
            if run_id is None:
                named = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name])),
                                              limit=1)
                run_id = named[0].id if named else None
            if run_id is not None:
                artifacts = []
                for scope in (FlowRunFilter(name=FlowRunFilterName(any_=[run_name])),
                              FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]))):
                    artifacts += client.read_artifacts(artifact_filter=progress, flow_run_filter=scope,
                                                       sort=ArtifactSort.CREATED_DESC)
                for artifact in sorted(artifacts, key=lambda a: a.created):
                    if artifact.id not in bars:
                        bars[artifact.id] = bar.add_task("", total=100)
                    bar.update(bars[artifact.id], completed=float(artifact.data),
                               description=artifact.description or "")
            if finished:
                break
            worker.join(timeout=0.5)
    if "error" in ended:
        raise ended["error"]
    return ended["result"]
