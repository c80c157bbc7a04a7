"""``mlcycle package``, ``mlcycle serve`` and ``mlcycle labels``: packaging, local serving, outcomes.

Exit 0 on success, 1 when the work failed (test-serving refused the bento, the registry has no such
version, the server died), 2 for bad usage or configuration.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from mlcycle.flows.cli.common import JSON_OPT, UsageFailure, check_dates, emit, prepare_flows, read_settings

commands = typer.Typer()


def _version(value: str | None) -> int | str:
    if value is None or value == "champion":
        return "champion"
    if value.isascii() and value.isdigit() and int(value) >= 1:
        return int(value)
    raise UsageFailure(f"--version must be a version number (1, 2, ...) or 'champion', got {value!r}")


def _port(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= 65535:
        raise UsageFailure(f"--port must be between 0 and 65535 (0: any free port), got {value}")
    return value


@commands.command()
def package(
    ctx: typer.Context,
    version: str = typer.Option(None, "--version", help="registry version to package (default: the champion)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Import a registry version into BentoML, build the bento, test-serve it (canaries + latency)."""
    from mlcycle.tasks.registry.versions import load_metadata, model_name
    from mlcycle.tasks.storage import open_store

    ref = _version(version)
    settings = read_settings()
    load_metadata(open_store(settings), model_name(settings), ref)  # no such version: one line, before any server
    prepare_flows(ctx, settings)
    from mlcycle.flows.package import package_flow

    outcome = package_flow(version=None if ref == "champion" else ref)
    c, lat = outcome.check.canary, outcome.check.latency
    emit(as_json, outcome.model_dump(mode="json"),
         f"{outcome.model_name} v{outcome.model_version} -> bento {outcome.bento_tag} "
         f"({'built' if outcome.built else 'reused'})\n"
         f"test-serving passed: {c.rows} canary rows equal to the in-process pipeline "
         f"(max |diff| {max(c.max_abs_diff_predict, c.max_abs_diff_batch):.2g}), "
         f"single-row p95 {lat.p95_ms:.1f} ms (budget {lat.budget_ms:.0f} ms)\n"
         f"serve it: mlcycle serve --version {outcome.model_version}")


@commands.command()
def serve(
    version: str = typer.Option(None, "--version", help="registry version to serve (default: the champion)"),
    port: int = typer.Option(None, "--port", help="port on serving.host (default: serving.port; 0: any free port)"),
    background: bool = typer.Option(False, "--background",
                                    help="leave it running as a stack service (stop with `mlcycle down`)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Serve a registry version locally until Ctrl-C / SIGTERM (then flush the inference log, exit 0).

    Packages it first if needed (import + build; `mlcycle package` also test-serves).
    """
    from mlcycle.tasks.serving.client import curl_example, example_request
    from mlcycle.tasks.serving.packaging import build_bento, import_model
    from mlcycle.tasks.serving.process import serve_in_background, start_serving, wait_ready
    from mlcycle.tasks.storage import open_store

    ref, port = _version(version), _port(port)
    settings = read_settings()
    store = open_store(settings)
    model = import_model(store, settings, ref)
    bento = build_bento(settings, model)
    example = curl_example("{url}", example_request(store, settings, model.name, model.version),
                           bearer=settings.api_token is not None)
    if background:
        service = serve_in_background(settings, bento.tag, port)
        info = {"url": service.url, "pid": service.pid, "log": service.log, "bento": bento.tag,
                "model_version": model.version, "example": example.replace("{url}", service.url)}
        emit(as_json, info, f"{model.name} v{model.version} ({bento.tag}) serving at {service.url} "
                            f"(pid {service.pid}, log {service.log}); stop with `mlcycle down`\n"
                            f"try: {info['example']}")
        return
    port = settings.serving.port if port is None else port
    process = start_serving(settings, bento.tag, port=port, host=settings.serving.host)

    def on_signal(_signum, _frame):  # SIGTERM and Ctrl-C: stop `bentoml serve` gracefully (it flushes the log)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        wait_ready(process, settings.serving.readiness_timeout_seconds)
        info = {"url": process.url, "pid": process.pid, "log": str(process.log_path), "bento": bento.tag,
                "model_version": model.version, "example": example.replace("{url}", process.url)}
        emit(as_json, info, f"{model.name} v{model.version} ({bento.tag}) serving at {process.url}\n"
                            f"try: {info['example']}\n"
                            f"docs: {process.url}/  metadata: {process.url}/metadata  log: {process.log_path}\n"
                            "stop with Ctrl-C")
        sys.stdout.flush()
        code = process.process.wait()
        raise ServerDied(f"bentoml serve exited with code {code}; log {process.log_path}: {process.log_tail(600)}")
    except KeyboardInterrupt:
        if not as_json:
            typer.echo("stopping: flushing the inference log...", err=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        process.stop()


class ServerDied(RuntimeError):
    """The served process exited on its own."""


@commands.command()
def labels(
    file: Path = typer.Option(None, "--file", help="CSV or Parquet with request_id,row (or the id column) "
                                                   "and the target"),
    simulate: bool = typer.Option(False, "--simulate", help="outcomes of logged simulator requests"),
    date: str = typer.Option(None, "--date", help="with --simulate: inference log date YYYY-MM-DD "
                                                  "(default: every date)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Import outcomes of earlier predictions into labels/ (joined to the inference log by request id)."""
    from mlcycle.tasks.inference_reader import inference_dates
    from mlcycle.tasks.labels import LabelsError, import_labels_file, simulator_labels, write_labels
    from mlcycle.tasks.sources import parse_date
    from mlcycle.tasks.storage import open_store

    if bool(file) == simulate:
        raise UsageFailure("give either --file PATH or --simulate")
    if date and not simulate:
        raise UsageFailure("--date goes with --simulate")
    check_dates(date)
    if file and (not file.is_file() or file.suffix.lower() not in (".csv", ".txt", ".parquet")):
        raise UsageFailure(f"--file {file} must be an existing .csv or .parquet file")
    settings = read_settings()
    store = open_store(settings)
    if file:
        written = import_labels_file(store, settings.dataset, file)
    else:
        dates = [parse_date(date)] if date else inference_dates(store)
        frame = simulator_labels(store, settings, dates)
        if frame.empty:
            raise LabelsError(f"no logged predictions with simulator ids on {date or 'any date'}; "
                              "send simulated records (with their id column) to the service first")
        written = write_labels(store, settings.dataset, frame)
    emit(as_json, written.model_dump(mode="json"),
         f"{written.rows} labels -> {written.uri} (joined on {', '.join(written.keys)})")
