"""The demo flow: the whole life cycle on the embedded defaults, as `mlcycle demo` (and `make demo`) runs it.

``demo`` (no deployment: the CLI runs it against the local stack, so it shows in the UI as one run
with the stages as its subflows)::

    backfill ─▶ train ─▶ wait-for-rollout ─▶ for each traffic phase (before, then after the drift date):
    (demo.days   (gate,   (the promotion         demo-traffic ─▶ wait-for-inference-log
     from         promote) started rollout/       ─▶ [backfill of the days served, after the drift date]
     demo.start)           on-demand on the       ─▶ monitor
                           worker; without that
                           deployment: rollout
                           here)

Before the post-drift monitor, the days up to the last one served are ingested too, as the daily ingest
would have done by then (tasks.demo.catch_up_range says why). The waits are bounded by
``demo.rollout_timeout_seconds`` and ``demo.inference_log_timeout_seconds``.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, get_run_logger

from mlcycle.flows.ingest import backfill_flow
from mlcycle.flows.monitor import monitor_flow
from mlcycle.flows.rollout import rollout_flow
from mlcycle.flows.train import train_flow
from mlcycle.tasks.demo import (
    catch_up_range,
    chained_rollout_task,
    champion_task,
    monitor_phase,
    send_traffic_task,
    simulated,
    traffic_phases,
    wait_for_logged_rows_task,
)
from mlcycle.tasks.records.demo import DemoServing, DemoSummary, DemoTraining
from mlcycle.tasks.settings import get_settings


@flow(name="demo", log_prints=True)
def demo_flow() -> DemoSummary:
    """Backfill, train, wait for the chained rollout, then traffic and a monitor run before and after drift."""
    settings = get_settings()
    logger = get_run_logger()

    start = settings.demo.start
    end = start + dt.timedelta(days=settings.demo.days - 1)
    logger.info("1/5 ingest + validate %d days from %s (%s)", settings.demo.days, start, settings.ingest.source)
    backfill = backfill_flow(start=start.isoformat(), end=end.isoformat())

    logger.info("2/5 train, gate and register a champion")
    trained_at = dt.datetime.now(dt.UTC)
    outcome = train_flow()
    if outcome.champion is None:  # nothing to package or serve: say why, in the gate's own words
        raise RuntimeError(f"the demo's training promoted no champion, so there is nothing to serve: "
                           f"{outcome.decision.summary}")
    champion = champion_task(settings)

    logger.info("3/5 the promotion starts the rollout deployment: package, test-serve, blue/green switch")
    deployment = chained_rollout_task(settings, outcome.champion, trained_at) if outcome.promoted else None
    if deployment is None:  # nothing was chained (not promoted, or no rollout deployment): roll out here
        deployment = rollout_flow(target="process")

    logger.info("4/5 traffic through the endpoint (%s), then monitor",
                "simulated: before, then after the drift date" if simulated(settings) else "the stored rows")
    phases = traffic_phases(settings)
    monitoring = []
    for label, days in phases:
        window_start = dt.datetime.now(dt.UTC)
        sent = send_traffic_task(settings, deployment.endpoint_url, days)
        wait_for_logged_rows_task(settings, window_start, sent["rows"])
        catch_up = catch_up_range(settings, days[-1]) if label == phases[-1][0] else None
        if catch_up:
            backfill_flow(start=catch_up[0].isoformat(), end=catch_up[1].isoformat())
        report = monitor_flow(start=window_start.isoformat(), end=dt.datetime.now(dt.UTC).isoformat())
        monitoring.append(monitor_phase(label, report))

    return DemoSummary(
        ingested=backfill.summary(), training=DemoTraining(training=outcome, champion=champion),
        serving=DemoServing(url=deployment.endpoint_url, model_version=deployment.model_version,
                            bento=deployment.bento_tag),
        monitoring=monitoring)
