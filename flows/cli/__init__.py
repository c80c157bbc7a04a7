"""The ``mlcycle`` command line: the same flows the Prefect deployments run, for humans and CI.

Every command accepts ``--json`` (machine-readable output on stdout). Exit codes: 0 success; 1 the
work failed (a quarantined batch, a failed flow); 2 bad usage or configuration. On failure a single
line naming the reason goes to stderr.

Flows run against ``PREFECT_API_URL`` when set; otherwise against the local stack if `mlcycle up`
started one (so runs show in its UI); otherwise Prefect's ephemeral server.

This module holds the app and :func:`main`; each command group lives in its own module (``data``,
``models``, ``serving``, ``rollout``, ``stack``, ``monitor``, ``demo``, ``init``) on the helpers of ``common``.
"""

from __future__ import annotations

import sys

import typer

from mlcycle.flows.cli import data, demo, init, models, monitor, rollout, serving, stack
from mlcycle.flows.cli.common import UsageFailure, one_line

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="mlcycle: the life cycle of a tabular model on Prefect 3.")
for group in (init, data, stack, monitor, demo, models, serving, rollout):
    app.add_typer(group.commands)  # no name: the group's commands join the top level


def main() -> None:
    """Console entry point: map failures to exit codes and a one-line reason on stderr."""
    from pydantic import ValidationError

    from mlcycle.tasks.settings import ConfigError
    from mlcycle.tasks.sources import SourceError
    from mlcycle.tasks.storage import UnsafeKey

    try:
        app(standalone_mode=False)
    except (UsageFailure, ConfigError, ValidationError, UnsafeKey) as exc:
        typer.echo(f"mlcycle: error: {one_line(exc)}", err=True)
        sys.exit(2)
    except SourceError as exc:
        typer.echo(f"mlcycle: error: {one_line(exc)}", err=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("mlcycle: aborted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # typer's own usage errors (unknown command, missing option)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        typer.echo(f"mlcycle: error: {one_line(message)}", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one line, exit 1
        typer.echo(f"mlcycle: error: {type(exc).__name__}: {one_line(exc)}", err=True)
        sys.exit(1)
