"""What every ``mlcycle`` command shares: output, usage errors, settings read at the edge, the local stack.

* :func:`emit` prints a command's result: its JSON on stdout with ``--json`` (:data:`JSON_OPT`), else the
  human lines;
* :class:`UsageFailure` is bad arguments (exit 2); :func:`check_dates` turns malformed or reversed date
  arguments into one;
* :func:`read_settings` is where the CLI reads the configuration, once per command;
* :func:`use_local_stack` points the flows at the stack `mlcycle up` started;
* :func:`one_line` is the single line ``main()`` prints on stderr for any failure;
* :func:`backfill_progress` draws a progress bar on stderr for each backfill run inside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def backfill_progress(show: bool) -> Iterator[None]:
    """A progress bar on stderr for every backfill that runs in this process inside the block.

    A bar starts when a backfill reports its first finished date and stops at its last one, so the
    demo's two backfills each get their own bar and nothing is drawn in between. The Prefect UI gets
    the backfill's progress artifact either way.
    """
    if not show:
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mlcycle.tasks.ingest import progress_listeners

    running: list[tuple[Progress, Any]] = []  # the bar of the backfill in progress, if any

    def on_progress(done: int, total: int, day, status: str) -> None:
        if not running:
            bar = Progress(TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           TextColumn("{task.description}"), transient=False, console=Console(stderr=True))
            bar.start()
            running.append((bar, bar.add_task("", total=total)))
        bar, job = running[0]
        bar.update(job, completed=done, description=f"{day} {status}")
        if done >= total:
            bar.stop()
            running.clear()

    progress_listeners.append(on_progress)
    try:
        yield
    finally:
        progress_listeners.remove(on_progress)
        for bar, _ in running:
            bar.stop()
