"""``mlcycle monitor``: one monitoring run (drift, live performance, maybe a training) from the shell.

Exit 0 also when there is nothing to monitor yet (no champion); 2 for a window bound that is not an ISO
datetime.
"""

from __future__ import annotations

import datetime as dt

import typer

from mlcycle.flows.cli.common import JSON_OPT, UsageFailure, emit, use_local_stack

commands = typer.Typer()


@commands.command()
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
    use_local_stack()
    from mlcycle.flows.monitor import monitor_flow

    report = monitor_flow(hours=hours, end=end, start=start)
    if report is None:
        emit(as_json, None, "nothing to monitor: no champion yet; train one with `mlcycle train`")
        return
    lines = [f"window {report.window_id}: {report.rows} rows", f"drift: {report.drift.summary()}"]
    if report.performance is not None:
        lines.append(f"performance: {report.performance.detail}")
    lines.append(f"trigger: {report.trigger.outcome}: {report.trigger.detail}")
    if report.report_key:
        lines.append(f"report: {report.report_key}")
    emit(as_json, report.model_dump(mode="json"), "\n".join(lines))
