"""The ``mlcycle`` command line: the same flows the Prefect deployments run, for humans and CI.

Every command accepts ``--json`` (machine-readable output on stdout). Exit codes: 0 success; 1 the
work failed (a quarantined batch, a failed flow); 2 bad usage or configuration. On failure a single
line naming the reason goes to stderr.

Flows run against ``PREFECT_API_URL`` when set; otherwise against the local stack if `mlcycle up`
started one (so runs show in its UI); otherwise Prefect's ephemeral server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from typing import Any

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="mlcycle: the life cycle of a tabular model on Prefect 3.")

JSON_OPT = typer.Option(False, "--json", help="print machine-readable JSON on stdout")


class UsageFailure(Exception):
    """Bad arguments or configuration: exit code 2."""


def _settings():
    from tasks.settings import get_settings

    return get_settings()


def _emit(as_json: bool, payload: Any, human: str) -> None:
    if as_json:
        typer.echo(json.dumps(payload, indent=2, default=str))
    else:
        typer.echo(human)


def _use_local_stack() -> None:
    """Point Prefect at the stack `mlcycle up` started, unless PREFECT_API_URL is already set."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    if os.environ.get("PREFECT_API_URL"):
        return
    from tasks import stack

    settings = _settings()
    server = stack.read_service(settings, "prefect-server")
    if server and server.alive() and stack.healthy(f"{stack.prefect_api_url()}/health"):
        os.environ["PREFECT_API_URL"] = stack.prefect_api_url()
        os.environ.setdefault("PREFECT_HOME", str((settings.home / "prefect").resolve()))


def _check_dates(date: str | None, start: str | None = None, end: str | None = None) -> None:
    """Date arguments are usage errors (exit 2) when malformed or reversed."""
    from tasks.sources import SourceError, date_range, parse_date

    try:
        for value in (date, start, end):
            if value:
                parse_date(value)
        if start and end:
            date_range(parse_date(start), parse_date(end))
    except SourceError as exc:
        raise UsageFailure(str(exc)) from None


def _manifest_line(m) -> str:
    verdict = ""
    if m.validation is not None:
        verdict = " passed" if m.validation.success else f" FAILED ({len(m.validation.failed)} expectations)"
    return f"{m.date}  {m.zone:<10} {m.rows:>8} rows  sha256 {m.data_sha256[:16]}{verdict}  {m.data_key}"


# --------------------------------------------------------------------------------------------------
# ingest / validate
# --------------------------------------------------------------------------------------------------


@app.command()
def ingest(
    date: str = typer.Option(None, "--date", help="logical date YYYY-MM-DD"),
    start: str = typer.Option(None, "--start", help="backfill: first date YYYY-MM-DD"),
    end: str = typer.Option(None, "--end", help="backfill: last date YYYY-MM-DD (inclusive)"),
    source: str = typer.Option(None, "--source", help="simulator | landing (default: config)"),
    concurrency: int = typer.Option(None, "--concurrency", help="backfill: dates in flight at once"),
    replace: bool = typer.Option(False, "--replace", help="supersede a partition holding different data"),
    as_json: bool = JSON_OPT,
) -> None:
    """Ingest and validate one date, or backfill a range; prints the partition manifest(s)."""
    if source not in (None, "simulator", "landing"):
        raise UsageFailure(f"--source must be 'simulator' or 'landing', got {source!r}")
    if date and (start or end):
        raise UsageFailure("give either --date or --start/--end, not both")
    if not date and not (start and end):
        raise UsageFailure("give --date YYYY-MM-DD, or --start and --end for a backfill")
    _check_dates(date, start, end)
    _use_local_stack()
    if date:
        from flows.ingest import ingest_flow

        manifest = ingest_flow(date=date, source=source, replace=replace)
        _emit(as_json, manifest.model_dump(mode="json"), _manifest_line(manifest))
        return
    report = _backfill_with_progress(start, end, source, concurrency, replace, show=not as_json)
    _emit(as_json, [o.model_dump(mode="json") for o in report.outcomes],
          "\n".join(_manifest_line(o.manifest) for o in report.outcomes if o.manifest))


def _backfill_with_progress(start, end, source, concurrency, replace, show: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.ingest import backfill_flow
    from tasks.ingest import progress_listeners
    from tasks.sources import date_range, parse_date

    total = len(date_range(parse_date(start), parse_date(end)))
    with Progress(TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), disable=not show, transient=False,
                  console=Console(stderr=True)) as bar:
        job = bar.add_task("", total=total)

        def on_progress(done: int, _total: int, day, status: str) -> None:
            bar.update(job, completed=done, description=f"{day} {status}")

        progress_listeners.append(on_progress)
        try:
            return backfill_flow(start=start, end=end, source=source, concurrency=concurrency, replace=replace)
        finally:
            progress_listeners.remove(on_progress)


@app.command()
def validate(
    date: str = typer.Option(..., "--date", help="logical date YYYY-MM-DD of a raw partition"),
    replace: bool = typer.Option(False, "--replace", help="supersede a validated partition with other data"),
    as_json: bool = JSON_OPT,
) -> None:
    """Re-validate a raw partition and publish or quarantine it."""
    _check_dates(date)
    _use_local_stack()
    from flows.ingest import validate_flow

    manifest = validate_flow(date=date, replace=replace)
    _emit(as_json, manifest.model_dump(mode="json"), _manifest_line(manifest))


@app.command()
def partitions(
    zone: str = typer.Option("validated", "--zone", help="raw | validated | quarantine"),
    as_json: bool = JSON_OPT,
) -> None:
    """List the partitions of a zone with their manifests."""
    from tasks.partitions import list_partitions, read_manifest
    from tasks.storage import open_store

    if zone not in ("raw", "validated", "quarantine"):
        raise UsageFailure(f"--zone must be raw, validated or quarantine, got {zone!r}")
    store = open_store(_settings())
    manifests = [read_manifest(store, zone, d) for d in list_partitions(store, zone)]
    _emit(as_json, [m.model_dump(mode="json") for m in manifests],
          "\n".join(_manifest_line(m) for m in manifests) or f"no {zone} partitions")


# --------------------------------------------------------------------------------------------------
# the local stack and the demo
# --------------------------------------------------------------------------------------------------


@app.command()
def up(as_json: bool = JSON_OPT) -> None:
    """Start the local stack: Prefect server + UI, deployments, a process worker; idempotent."""
    from tasks import stack

    settings = _settings()
    stack.up(settings)
    running = stack.services(settings)
    info = {"prefect_ui": f"http://127.0.0.1:{stack.prefect_port()}", "prefect_api": stack.prefect_api_url(),
            "work_pool": stack.WORK_POOL, "services": [s.__dict__ for s in running]}
    _emit(as_json, info, f"Prefect UI  {info['prefect_ui']}\nPrefect API {info['prefect_api']}\n"
          f"deployments: prefect.yaml deployed to work pool {stack.WORK_POOL}\n"
          f"running: {', '.join(f'{s.name} (pid {s.pid})' for s in running)}\n"
          "stop with: make down (or mlcycle down)")


@app.command()
def down(as_json: bool = JSON_OPT) -> None:
    """Stop what `mlcycle up` / `make demo` started, and only that."""
    from tasks import stack

    stopped = stack.down(_settings())
    _emit(as_json, {"stopped": stopped}, f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status(as_json: bool = JSON_OPT) -> None:
    """What runs in the local stack, and what the store holds."""
    from tasks import stack
    from tasks.partitions import list_partitions
    from tasks.storage import open_store

    settings = _settings()
    running = [{**s.__dict__, "alive": s.alive()} for s in stack.services(settings)]
    store = open_store(settings)
    zones = {z: [str(d) for d in list_partitions(store, z)] for z in ("raw", "validated", "quarantine")}
    info = {"services": running, "store": store.description, "partitions": {z: len(v) for z, v in zones.items()}}
    lines = [f"{s['name']:<16} pid {s['pid']:<8} {'up' if s['alive'] else 'DOWN'}  {s['url']}" for s in running]
    lines.append(f"store: {store.description}")
    lines.append("partitions: " + ", ".join(f"{z} {len(v)}" for z, v in zones.items()))
    _emit(as_json, info, "\n".join(lines) if running else "no services running\n" + "\n".join(lines))


@app.command()
def demo(as_json: bool = JSON_OPT) -> None:
    """The main job on embedded defaults: ingest and validate the demo window, then say where to look."""
    from tasks import stack
    from tasks.storage import open_store

    settings = _settings()
    _use_local_stack()
    start = settings.demo.start
    end = start + dt.timedelta(days=settings.demo.days - 1)
    report = _backfill_with_progress(start.isoformat(), end.isoformat(), None, None, False, show=not as_json)
    store = open_store(settings)
    info = {
        "ingested": report.summary(),
        "store": store.description,
        "prefect_ui": os.environ.get("PREFECT_API_URL", "").removesuffix("/api") or None,
        "background": [s.__dict__ for s in stack.services(settings)],
    }
    lines = [
        f"ingest: {report.summary()}",
        f"store:  {store.description}  (raw/, validated/, quarantine/, validation/ with Data Docs)",
    ]
    if info["prefect_ui"]:
        lines.append(f"Prefect UI: {info['prefect_ui']}  (flow runs 'backfill', artifacts 'validation-*')")
    if info["background"]:
        lines.append("left running: " + ", ".join(f"{s['name']} (pid {s['pid']})" for s in info["background"])
                     + "; stop with `make down`")
    _emit(as_json, info, "\n".join(lines))


def main() -> None:
    """Console entry point: map failures to exit codes and a one-line reason on stderr."""
    from pydantic import ValidationError

    from tasks.settings import ConfigError
    from tasks.sources import SourceError

    try:
        app(standalone_mode=False)
    except (UsageFailure, ConfigError, ValidationError) as exc:
        typer.echo(f"mlcycle: error: {_one_line(exc)}", err=True)
        sys.exit(2)
    except SourceError as exc:
        typer.echo(f"mlcycle: error: {_one_line(exc)}", err=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("mlcycle: aborted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # typer's own usage errors (unknown command, missing option)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        typer.echo(f"mlcycle: error: {_one_line(message)}", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one line, exit 1
        typer.echo(f"mlcycle: error: {type(exc).__name__}: {_one_line(exc)}", err=True)
        sys.exit(1)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:2000]


if __name__ == "__main__":
    main()
