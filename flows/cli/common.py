"""What every ``mlcycle`` command shares: output, exit codes, usage errors, settings read at the edge, Prefect.

* :func:`emit` prints a command's result: its JSON on stdout with ``--json`` (:data:`JSON_OPT`), else the
  human lines;
* :data:`EXIT_FAILED`, :data:`EXIT_USAGE`, :data:`EXIT_RETRAINING_NOT_STARTED`: the exit codes besides 0;
* :class:`UsageFailure` is bad arguments or configuration (exit 2), found before any flow or server starts;
  :func:`check_dates` turns malformed or reversed date arguments into one;
* :func:`read_settings` is where the CLI reads the configuration, once per command;
* :class:`CliOptions`: the global ``--debug`` and ``-v`` (set by the app's callback, read by :func:`cli_options`);
* :func:`prepare_flows` is what a command that runs a flow does first: the Prefect API it runs against
  (``PREFECT_API_URL``, else the local stack's server, else that server started once in the background), and
  Prefect's console logging quiet unless ``-v``/``--debug`` (the run's logs still reach the API and its UI);
* :func:`stack_api` is the local stack's API when it runs, for commands that only read from it;
* :func:`one_line` is the single line ``main()`` prints on stderr for any failure;
* :func:`run_with_progress` runs a flow while a bar on stderr follows its backfill progress artifacts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import typer

JSON_OPT = typer.Option(False, "--json", help="print machine-readable JSON on stdout")

EXIT_FAILED = 1  # the work failed: a quarantined batch, a failed flow, a refused rollout
EXIT_USAGE = 2  # bad usage or configuration, found before any flow or server starts
EXIT_RETRAINING_NOT_STARTED = 3  # `mlcycle monitor`: retraining warranted but could not be started
QUIET = logging.CRITICAL + 10  # above every level: Prefect's console handlers print nothing


class UsageFailure(Exception):
    """Bad arguments or configuration: exit code 2."""


@dataclass
class CliOptions:
    """The global options, given before the command: ``mlcycle --debug ingest ...``."""

    debug: bool = False  # tracebacks on failure, and Prefect's console logging at its own level
    verbose: bool = False  # Prefect's INFO lines on stderr


def cli_options(ctx: typer.Context) -> CliOptions:
    """The global options of the command being run (their defaults when none were given)."""
    return ctx.find_object(CliOptions) or CliOptions()


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


def _no_telemetry() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


def stack_api(settings) -> str | None:
    """``PREFECT_API_URL`` when set, else the local stack's API when its server runs; never starts one.

    For commands that run no flow and only read from Prefect when it is there (``mlcycle status``).
    """
    _no_telemetry()
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from mlcycle.tasks import stack

    url = stack.running_prefect_api(settings)
    if url is not None:
        os.environ["PREFECT_API_URL"] = url  # for the Prefect client this command may import next
        os.environ.setdefault("PREFECT_HOME", str((settings.home / "prefect").resolve()))
    return url


def prepare_flows(ctx: typer.Context, settings, console: int | None = None) -> str:
    """Before a command runs a flow: the Prefect API to run it against, and Prefect's console quieted.

    The API: ``PREFECT_API_URL`` (environment, Prefect profile, or a test harness) when set; else the local
    stack's server when it runs; else that server is started in the background once (a stack service with a
    pid file, as `mlcycle up` does for the server only; stderr says so and that `mlcycle down` stops it) and
    the next commands reuse it, instead of a temporary server started by Prefect for every command.

    Prefect's console handlers print nothing unless ``-v`` (INFO) or ``--debug`` (everything); ``console``
    is the command's own default (the demo shows its steps). Both last until the command (``ctx``) ends.

    A flow the CLI runs in its own process sends no flow-run heartbeats: Prefect's heartbeat thread sleeps in
    whole seconds and the engine joins it when the run ends, which added 0-1 s (half a second on average) to
    every flow command after its run had finished (benchmarks/README.md, CLI overhead). Heartbeats feed
    Prefect's zombie-run detection of *deployment* runs, which a worker starts and nobody watches; those keep
    Prefect's default. A foreground command's user sees it fail, and its run is marked crashed by the engine.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from mlcycle.tasks import stack

    _no_telemetry()
    url = PREFECT_API_URL.value()
    if not url:
        url = stack.running_prefect_api(settings)
        if url is None:
            typer.echo(f"mlcycle: no Prefect API (PREFECT_API_URL) and no local stack: starting the stack's Prefect "
                       f"server in the background at {url or stack.prefect_api_url()} ...", err=True)
            server, _ = stack.ensure_prefect_server(settings)
            url = stack.prefect_api_url()
            typer.echo(f"mlcycle: Prefect server started (pid {server.pid}, UI {server.url}, log {server.log}); "
                       "later commands reuse it, `mlcycle down` stops it", err=True)
        ctx.with_resource(_environment({"PREFECT_API_URL": url,
                                        "PREFECT_HOME": str((settings.home / "prefect").resolve())}))
        ctx.with_resource(temporary_settings(updates={PREFECT_API_URL: url}))
    ctx.with_resource(temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
    options = cli_options(ctx)
    level = logging.NOTSET if options.debug else logging.INFO if options.verbose else QUIET if console is None \
        else console
    ctx.with_resource(prefect_console(level))
    return url


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Environment variables set for the command (the processes it starts inherit them), restored after."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def prefect_console(level: int) -> Iterator[None]:
    """Prefect's console output at ``level`` while the command runs; the API handlers are left alone.

    Prefect's logging config sends every record to the root logger's console handler (and ``prefect._internal``
    to its own stderr handler); raising those handlers' level silences the console without changing any logger,
    so a run's records still reach the Prefect API. When quiet, library warnings are not printed either.
    """
    import warnings

    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # Prefect configures its logging when `prefect` itself is first imported
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
                                      if name.startswith(("prefect", "uvicorn", "fastapi")))]
    handlers = {h for logger in loggers for h in logger.handlers
                if isinstance(h, PrefectConsoleHandler)
                or (type(h).__name__ == "_SafeStreamHandler" and logger.name.startswith("prefect"))}
    before = {h: h.level for h in handlers}
    for handler in handlers:
        handler.setLevel(level)
    try:
        with warnings.catch_warnings():
            if level >= QUIET:
                warnings.simplefilter("ignore")
            yield
    finally:
        for handler, previous in before.items():
            handler.setLevel(previous)


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
