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
    from mlcycle.tasks.settings import get_settings

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
    from mlcycle.tasks import stack

    settings = _settings()
    server = stack.read_service(settings, "prefect-server")
    if server and server.alive() and stack.healthy(f"{stack.prefect_api_url()}/health"):
        os.environ["PREFECT_API_URL"] = stack.prefect_api_url()
        os.environ.setdefault("PREFECT_HOME", str((settings.home / "prefect").resolve()))


def _check_dates(date: str | None, start: str | None = None, end: str | None = None) -> None:
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
    concurrency: int = typer.Option(None, "--concurrency", help="backfill: tasks running at once (threads)"),
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
        from mlcycle.flows.ingest import ingest_flow

        manifest = ingest_flow(date=date, source=source, replace=replace)
        _emit(as_json, manifest.model_dump(mode="json"), _manifest_line(manifest))
        return
    report = _backfill_with_progress(start, end, source, concurrency, replace, show=not as_json)
    _emit(as_json, [o.model_dump(mode="json") for o in report.outcomes],
          "\n".join(_manifest_line(o.manifest) for o in report.outcomes if o.manifest))


def _backfill_with_progress(start, end, source, concurrency, replace, show: bool):
    """Run the backfill in a worker thread while the bar follows its run's progress artifact in Prefect.

    The run gets a unique name, so its ``backfill-progress`` artifact (the one the UI shows: percent of
    the tasks done, and the last date finished) is found by that name; the bar polls it until the thread
    ends, then this returns the flow's result or raises its error.
    """
    import contextvars
    import threading
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterName
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from mlcycle.flows.ingest import PROGRESS_ARTIFACT, backfill_flow

    run_name = f"backfill-{start}-{end}-{uuid.uuid4().hex[:8]}"
    ended: dict[str, Any] = {}

    def run() -> None:
        try:
            ended["report"] = backfill_flow.with_options(flow_run_name=run_name)(
                start=start, end=end, source=source, concurrency=concurrency, replace=replace)
        except BaseException as exc:  # handed to the caller's thread below
            ended["error"] = exc

    # The thread runs in a copy of this context, so it talks to the same Prefect API as the polling below.
    worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), name=run_name, daemon=True)
    progress = ArtifactFilter(key=ArtifactFilterKey(any_=[PROGRESS_ARTIFACT]))
    this_run = FlowRunFilter(name=FlowRunFilterName(any_=[run_name]))
    with Progress(BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                  disable=not show, transient=False, console=Console(stderr=True)) as bar, \
            get_client(sync_client=True) as client:
        job = bar.add_task(f"backfill {start}..{end}", total=100)
        worker.start()
        while True:
            finished = not worker.is_alive()  # read before polling, so the last poll sees the last update
            for artifact in client.read_artifacts(artifact_filter=progress, flow_run_filter=this_run, limit=1):
                bar.update(job, completed=float(artifact.data), description=artifact.description or "")
            if finished:
                break
            worker.join(timeout=0.5)
    if "error" in ended:
        raise ended["error"]
    return ended["report"]


@app.command()
def validate(
    date: str = typer.Option(..., "--date", help="logical date YYYY-MM-DD of a raw partition"),
    replace: bool = typer.Option(False, "--replace", help="supersede a validated partition with other data"),
    as_json: bool = JSON_OPT,
) -> None:
    """Re-validate a raw partition and publish or quarantine it."""
    _check_dates(date)
    _use_local_stack()
    from mlcycle.flows.ingest import validate_flow

    manifest = validate_flow(date=date, replace=replace)
    _emit(as_json, manifest.model_dump(mode="json"), _manifest_line(manifest))


@app.command()
def partitions(
    zone: str = typer.Option("validated", "--zone", help="raw | validated | quarantine"),
    as_json: bool = JSON_OPT,
) -> None:
    """List the partitions of a zone with their manifests."""
    from mlcycle.tasks.partitions import list_partitions, read_manifest
    from mlcycle.tasks.storage import open_store

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
    from mlcycle.tasks import stack

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
def monitor(
    hours: int = typer.Option(None, "--hours", min=1, help="window length (default: monitor.window_hours)"),
    end: str = typer.Option(None, "--end", help="window end, ISO datetime UTC (default: this hour)"),
    start: str = typer.Option(None, "--start", help="window start, ISO datetime UTC (overrides --hours)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Measure drift and live performance of the champion; start a training when warranted."""
    for name, value in (("--end", end), ("--start", start)):
        if value:
            try:
                dt.datetime.fromisoformat(value)
            except ValueError:
                raise UsageFailure(f"{name} {value!r} is not an ISO datetime (e.g. 2026-10-23T00:00)") from None
    _use_local_stack()
    from mlcycle.flows.monitor import monitor_flow

    report = monitor_flow(hours=hours, end=end, start=start)
    if report is None:
        _emit(as_json, None, "nothing to monitor: no champion yet; train one with `mlcycle train`")
        return
    lines = [f"window {report.window_id}: {report.rows} rows", f"drift: {report.drift.summary()}"]
    if report.performance is not None:
        lines.append(f"performance: {report.performance.detail}")
    lines.append(f"trigger: {report.trigger.outcome}: {report.trigger.detail}")
    if report.report_key:
        lines.append(f"report: {report.report_key}")
    _emit(as_json, report.model_dump(mode="json"), "\n".join(lines))


@app.command()
def down(as_json: bool = JSON_OPT) -> None:
    """Stop what `mlcycle up` / `make demo` started, and only that."""
    from mlcycle.tasks import stack
    from mlcycle.tasks.rollout.orchestrate import teardown

    settings = _settings()
    stopped = teardown(settings) + stack.down(settings)
    _emit(as_json, {"stopped": stopped}, f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status(as_json: bool = JSON_OPT) -> None:
    """What runs in the local stack, the champion, the live deployment and the last monitor decision."""
    from mlcycle.tasks import stack
    from mlcycle.tasks.monitor.trigger import last_decision
    from mlcycle.tasks.partitions import list_partitions
    from mlcycle.tasks.registry.versions import read_alias
    from mlcycle.tasks.rollout.orchestrate import read_current
    from mlcycle.tasks.storage import open_store
    from mlcycle.tasks.training.challenger import model_name

    settings = _settings()
    running = [{**s.__dict__, "alive": s.alive()} for s in stack.services(settings)]
    store = open_store(settings)
    zones = {z: len(list_partitions(store, z)) for z in ("raw", "validated", "quarantine")}
    champion = read_alias(store, model_name(settings))
    current = read_current(store)
    decision = last_decision(store)
    schedules = _schedules()
    info = {
        "services": running, "store": store.description, "partitions": zones,
        "champion": {"model": model_name(settings), "version": champion.version, "since": champion.set_at}
        if champion else None,
        "deployment": {"model_version": current.model_version, "status": current.status,
                       "endpoint": current.endpoint_url, "since": current.live_since} if current else None,
        "last_monitor": {"window": decision.window_id, "drift": decision.drift.summary(),
                         "trigger": decision.trigger.outcome if decision.trigger else None} if decision else None,
        "schedules": [s.model_dump(mode="json") for s in schedules] if schedules is not None else None,
    }
    lines = [f"{s['name']:<20} pid {s['pid']:<8} {'up' if s['alive'] else 'DOWN'}  {s['url']}" for s in running]
    lines = lines or ["no services running"]
    lines.append(f"store:      {store.description}")
    lines.append("partitions: " + ", ".join(f"{z} {n}" for z, n in zones.items()))
    lines.append(f"champion:   {model_name(settings)} v{champion.version}" if champion else "champion:   none")
    lines.append(f"deployment: v{current.model_version} {current.status} at {current.endpoint_url}" if current
                 else "deployment: none")
    if decision:
        lines.append(f"monitor:    {decision.window_id}: {decision.drift.summary()}; trigger "
                     f"{decision.trigger.outcome if decision.trigger else '-'}")
    if schedules is None:
        lines.append("schedules:  no Prefect server answers (mlcycle up starts one)")
    else:
        lines.append("schedules:" + ("".join(f"\n  {s.line()}" for s in schedules) or "  none declared"))
    _emit(as_json, info, "\n".join(lines))


def _schedules():
    """Each scheduled deployment's next and last scheduled run, from the Prefect API; None when none answers."""
    import httpx

    _use_local_stack()
    if not os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.client.orchestration import get_client

    from mlcycle.tasks.schedules import schedule_status

    try:
        with get_client(sync_client=True) as client:
            return schedule_status(client)
    except (httpx.HTTPError, OSError):
        return None


@app.command()
def demo(as_json: bool = JSON_OPT) -> None:
    """The main job on embedded defaults: the whole life cycle, then where to look."""
    from mlcycle.tasks import stack
    from mlcycle.tasks.storage import open_store

    settings = _settings()
    _use_local_stack()
    say = (lambda text: None) if as_json else (lambda text: typer.echo(f"\n== {text}", err=True))
    info: dict[str, Any] = {}

    say(f"1/5 ingest + validate {settings.demo.days} simulated days from {settings.demo.start}")
    start = settings.demo.start
    end = start + dt.timedelta(days=settings.demo.days - 1)
    report = _backfill_with_progress(start.isoformat(), end.isoformat(), None, None, False, show=not as_json)
    info["ingested"] = report.summary()

    say("2/5 train, gate and register a champion")
    from mlcycle.flows.train_cli import demo_training

    trained_at = dt.datetime.now(dt.UTC)
    payload, training_text = demo_training()
    info["training"] = payload

    say("3/5 the promotion starts the rollout deployment: package, test-serve, blue/green switch")
    promoted = payload["training"].get("promoted")
    champion = (payload.get("champion") or {}).get("version") if promoted else None  # None: roll out here
    deployment = _chained_rollout(settings, champion, since=trained_at)
    info["serving"] = {"url": deployment.endpoint_url, "model_version": deployment.model_version,
                       "bento": deployment.bento_tag}

    say("4/5 simulated traffic through the endpoint (before, then after the drift date), then monitor")
    info["monitoring"] = _demo_traffic_and_monitor(settings, deployment.endpoint_url, show=not as_json)

    store = open_store(settings)
    info["store"] = store.description
    info["prefect_ui"] = os.environ.get("PREFECT_API_URL", "").removesuffix("/api") or None
    info["background"] = [s.__dict__ for s in stack.services(settings)]
    say("5/5 where to look")
    from mlcycle.tasks.serving.client import curl_example, example_request

    url = deployment.endpoint_url
    example = example_request(store, settings, deployment.model_name, int(deployment.model_version))
    lines = [
        f"ingest:    {info['ingested']}",
        f"training:  {training_text}",
        f"serving:   {url}  (model v{deployment.model_version}, bento {deployment.bento_tag})",
        f"           {curl_example(url, example, bearer=settings.api_token is not None)}",
    ]
    for step in info["monitoring"]:
        lines.append(f"monitor:   {step['label']}: {step['drift']} -> trigger {step['trigger']}")
    lines.append(f"store:     {store.description}  (raw/ validated/ quarantine/ validation/ models/ "
                 "inference/ reports/monitoring/ deployments/)")
    if info["prefect_ui"]:
        lines.append(f"Prefect UI: {info['prefect_ui']}  (deployments, flow runs, artifacts: validation, gate "
                     "decision, drift report)")
    if info["background"]:
        lines.append("left running: " + ", ".join(f"{s['name']} (pid {s['pid']})" for s in info["background"])
                     + "; stop them with `make down`")
    _emit(as_json, info, "\n".join(lines))


def _chained_rollout(settings, version: int | None, since: dt.datetime):
    """Wait for the rollout the promotion started on the worker; without a deployed stack, roll out here."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    from mlcycle.tasks.rollout.orchestrate import read_current
    from mlcycle.tasks.storage import open_store

    with get_client(sync_client=True) as client:
        try:
            deployment_id = client.read_deployment_by_name(settings.rollout.deployment).id
        except ObjectNotFound:
            deployment_id = None
        if deployment_id is None or version is None:
            from mlcycle.flows.rollout import rollout_flow

            return rollout_flow(target="process")
        store = open_store(settings)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            current = read_current(store)
            if current is not None and current.status == "live" and current.model_version == str(version):
                return current
            by_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            runs = client.read_flow_runs(deployment_filter=by_deployment, sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                                         limit=1)
            run = runs[0] if runs else None
            if (run is not None and run.created is not None and run.created >= since and run.state is not None
                    and run.state.is_final() and not run.state.is_completed()):
                raise RuntimeError(f"the rollout run {run.name} ended {run.state.name}: {run.state.message}")
            time.sleep(2)
    raise RuntimeError(f"model v{version} was not live behind the endpoint within 15 minutes")


def _demo_traffic_and_monitor(settings, url: str, show: bool = True) -> list[dict]:
    """Send pre-drift then post-drift days through the endpoint; monitor each batch of traffic.

    Before the post-drift monitor, the days up to the last one served are ingested too, as the daily
    ingest would have done by then: the retraining the monitor triggers then learns from the drifted
    days (with only the champion's own days it could never beat the champion at the gate).
    """
    import time

    from mlcycle.flows.monitor import monitor_flow
    from mlcycle.tasks.traffic import send_http

    drift_dates = sorted({e.start for e in settings.simulator.drift})
    first_drift = drift_dates[0] if drift_dates else settings.demo.start + dt.timedelta(days=30)
    phases = [("before the drift date", [first_drift - dt.timedelta(days=i) for i in (4, 3, 2, 1)]),
              ("after the drift date", [first_drift + dt.timedelta(days=i) for i in (0, 1, 2, 3)])]
    results = []
    for label, days in phases:
        window_start = dt.datetime.now(dt.UTC)
        sent = send_http(url, settings, days, rows_per_day=300)
        if sent["failed"]:
            raise RuntimeError(f"{sent['failed']} of {sent['requests']} demo requests failed at {url}")
        time.sleep(settings.serving.inference_log.flush_interval_seconds + 2)  # the log flushes on a timer
        if label == phases[-1][0]:
            first = settings.demo.start + dt.timedelta(days=settings.demo.days)
            if first <= days[-1]:
                _backfill_with_progress(first.isoformat(), days[-1].isoformat(), None, None, False, show=show)
        report = monitor_flow(start=window_start.isoformat(), end=dt.datetime.now(dt.UTC).isoformat())
        results.append({"label": label, "rows": report.rows, "drift": report.drift.summary(),
                        "trigger": f"{report.trigger.outcome} ({report.trigger.detail})",
                        "report": report.report_key})
    return results


def _register_stage_commands() -> None:
    """The commands of the later stages live beside their flows; each module adds its own."""
    from mlcycle.flows.rollout_cli import register as register_rollout
    from mlcycle.flows.serve_cli import register as register_serve
    from mlcycle.flows.train_cli import register as register_train

    register_train(app)
    register_serve(app)
    register_rollout(app)


def main() -> None:
    """Console entry point: map failures to exit codes and a one-line reason on stderr."""
    from pydantic import ValidationError

    from mlcycle.tasks.settings import ConfigError
    from mlcycle.tasks.sources import SourceError
    from mlcycle.tasks.storage import UnsafeKey

    _register_stage_commands()  # here, not at import: the stage modules import helpers from this one
    try:
        app(standalone_mode=False)
    except (UsageFailure, ConfigError, ValidationError, UnsafeKey) as exc:
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
