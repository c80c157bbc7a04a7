"""The ``mlcycle`` command line: the same flows the Prefect deployments run, for humans and CI.

Every command accepts ``--json`` (machine-readable output on stdout). Exit codes: 0 success; 1 the
work failed (a quarantined batch, a failed flow); 2 bad usage or configuration, found before any flow or
server starts; 3 (``mlcycle monitor``) retraining warranted but could not be started. On failure a single
line naming the reason goes to stderr; the global ``--debug`` adds the traceback.

Flows run against ``PREFECT_API_URL`` when set; otherwise against the local stack's Prefect server, which
the first flow command starts in the background when `mlcycle up` has not (``common.prepare_flows``). Prefect's
console logging is quiet unless ``-v`` (its INFO lines) or ``--debug``; the runs' logs are in its UI. Commands
that run no flow (``models list/show``, ``partitions``, ``status``, ``deployments``, ``labels``) start no server
and import no Prefect.

This module holds the app and :func:`main`; each command group lives in its own module (``data``,
``models``, ``serving``, ``rollout``, ``stack``, ``monitor``, ``demo``, ``init``) on the helpers of ``common``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import traceback

import typer

from mlcycle.flows.cli import data, demo, init, models, monitor, rollout, serving, stack
from mlcycle.flows.cli.common import EXIT_FAILED, EXIT_USAGE, CliOptions, UsageFailure, one_line

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="mlcycle: the life cycle of a tabular model on Prefect 3.")
for group in (init, data, stack, monitor, demo, models, serving, rollout):
    app.add_typer(group.commands)  # no name: the group's commands join the top level


@app.callback()
def options(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="on failure print the traceback; show all of Prefect's logs"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="show Prefect's INFO log lines on stderr"),
) -> None:
    """Global options, before the command (mlcycle --debug ingest ...)."""
    ctx.obj = CliOptions(debug=debug, verbose=verbose)


def main() -> None:
    """Console entry point: map failures to exit codes and a one-line reason on stderr (with ``--debug``,
    the traceback first)."""
    from pydantic import ValidationError

    from mlcycle.tasks.settings import ConfigError
    from mlcycle.tasks.sources import SourceError
    from mlcycle.tasks.storage import UnsafeKey

    debug = "--debug" in sys.argv[1:]  # a global option: only valid before the command, read here too

    def fail(exc: BaseException | str, code: int, with_type: bool = False) -> None:
        if debug and isinstance(exc, BaseException):
            traceback.print_exception(exc)
        text = f"{type(exc).__name__}: {one_line(exc)}" if with_type else one_line(exc)
        typer.echo(f"mlcycle: error: {text}", err=True)
        sys.exit(code)

    try:
        code = app(standalone_mode=False)  # a command's typer.Exit(n) comes back as its return value here
        if isinstance(code, int) and code:
            sys.exit(code)
    except (UsageFailure, ConfigError, ValidationError, UnsafeKey) as exc:
        fail(exc, EXIT_USAGE)
    except SourceError as exc:
        fail(exc, EXIT_FAILED)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("mlcycle: aborted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # typer's own usage errors (unknown command, missing option)
        fail(exc.format_message() if hasattr(exc, "format_message") else str(exc), EXIT_USAGE)
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one line, exit 1
        fail(exc, EXIT_FAILED, with_type=True)


def console() -> None:
    """The ``mlcycle`` console script (and ``python -m mlcycle.flows.cli``): :func:`main`, then a quick exit.

    Once a command is done, the interpreter's teardown (freeing every module and object the work imported)
    costs a flow command 0.6-0.8 s and gives the user nothing (Great Expectations alone ~0.4 s;
    benchmarks/README.md, CLI overhead). So the process ends with ``os._exit`` -- but only after every exit
    hook has run: Python first runs ``threading``'s exit hooks (where Prefect drains its log and event queues
    to the API) and joins non-daemon threads, then runs the ``atexit`` hooks last-registered-first. This one is
    registered before the command imports anything that registers its own (Prefect's thread shutdowns,
    loky's executor, ``weakref.finalize`` of temporary folders), so it runs after all of them: it flushes
    the logging handlers and the standard streams and exits with the command's code (the pattern of
    Instagram's "Dismissing Python Garbage Collection at Instagram": ``atexit.register(os._exit, 0)``).
    Tests call :func:`main` in-process; this is for a process of its own.
    """
    outcome = {"code": 0}
    atexit.register(_exit_now, outcome)
    try:
        main()
    except SystemExit as exc:
        outcome["code"] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        raise
    except BaseException:
        outcome["code"] = 1  # Python prints the traceback; the exit hooks still run
        raise


def _exit_now(outcome: dict[str, int]) -> None:
    logging.shutdown()  # registered at logging's import, before this hook: it would run after it
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe (`mlcycle ... | head`) must not change the exit code
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(outcome["code"])
