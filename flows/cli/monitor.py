"""``mlcycle monitor``: one monitoring run (drift, live performance, maybe a training) from the shell.

Exit 0 also when there is nothing to monitor yet (no champion: said at once, no flow or server started);
2 for a window bound that is not an ISO datetime; 3 when retraining is warranted but could not be started
(no train deployment on the Prefect server, e.g. no `mlcycle up`): the report and the decision are stored
and printed all the same, and stderr says in one line how to go on.
"""

from __future__ import annotations

import datetime as dt

import typer

from mlcycle.flows.cli.common import (
    EXIT_RETRAINING_NOT_STARTED,
    JSON_OPT,
    UsageFailure,
    emit,
    prepare_flows,
    read_settings,
)

commands = typer.Typer()


HELP = ("Measure drift and live performance of the champion; start a training when warranted.\n\n"
        "Exit codes: 0 done (also when there is nothing to monitor yet); 1 the run failed; 2 bad usage or "
        "configuration; 3 retraining warranted but could not be started (no train deployment on the Prefect "
        "server: run `mlcycle up`, or train now with `mlcycle train`). With 3 the report and the decision are "
        "stored and printed all the same.")


@commands.command(help=HELP)
def monitor(
    ctx: typer.Context,
    hours: int = typer.Option(None, "--hours", min=1, help="window length (default: monitor.window_hours)"),
    end: str = typer.Option(None, "--end", help="window end, ISO datetime UTC (default: this hour)"),
    start: str = typer.Option(None, "--start", help="window start, ISO datetime UTC (overrides --hours)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Measure drift and live performance of the champion; start a training when warranted (exit codes: HELP)."""
    from mlcycle.tasks.monitor.window import nothing_to_monitor
    from mlcycle.tasks.registry.versions import model_name
    from mlcycle.tasks.storage import open_store

    for name, value in (("--end", end), ("--start", start)):
        if value:
            try:
                dt.datetime.fromisoformat(value)
            except ValueError:
                raise UsageFailure(f"{name} {value!r} is not an ISO datetime (e.g. 2026-10-23T00:00)") from None
    settings = read_settings()
    nothing = nothing_to_monitor(open_store(settings), model_name(settings))
    if nothing is not None:  # said at once: no flow, no server
        emit(as_json, None, f"nothing to monitor: {nothing}")
        return
    prepare_flows(ctx, settings)
    from mlcycle.flows.monitor import monitor_flow

    report = monitor_flow(hours=hours, end=end, start=start)
    if report is None:  # the champion went away meanwhile
        emit(as_json, None, "nothing to monitor: no champion yet; train one with `mlcycle train`")
        return
    lines = [f"window {report.window_id}: {report.rows} rows",
             f"judged: v{report.window.version}, from the {report.window.served_by}",
             f"drift: {report.drift.summary()}",
             f"why:   {report.drift.verdict}"]
    if report.performance is not None:
        lines.append(f"performance: {report.performance.detail}")
    if report.estimate is not None:
        lines.append(f"estimated:   {report.estimate.detail}")
    if report.drift.multivariate is not None:
        lines.append(f"multivariate: {report.drift.multivariate.detail}")
    lines.append(f"trigger: {report.trigger.outcome}: {report.trigger.detail}")
    if report.report_key:
        lines.append(f"report: {report.report_key}")
    emit(as_json, report.model_dump(mode="json"), "\n".join(lines))
    if report.retraining_not_started:
        typer.echo(f"mlcycle: error: {report.trigger.detail}", err=True)
        raise typer.Exit(EXIT_RETRAINING_NOT_STARTED)
