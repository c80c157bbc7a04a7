"""Whether the deployments' schedules really produce runs: what ``mlcycle status`` shows for each one.

A schedule can be declared, shown as active in the UI, and still never produce a run (the scheduler
service crashed at every loop under SQLAlchemy 2.1 and nothing noticed). So the status reads the runs the
scheduler created (Prefect tags them ``auto-scheduled``) rather than the declaration: the next one due,
and the last one that started, with its state. An active schedule with no upcoming run is reported as a
problem in words, pointing at the server log.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel

from mlcycle.tasks.settings.naming import project_tag

AUTO_SCHEDULED_TAG = "auto-scheduled"  # Prefect's scheduler service tags every run it creates with this
# How long after a deployment changed an active schedule may have no upcoming run (twice the scheduler's loop)
SCHEDULER_GRACE = dt.timedelta(seconds=120)


class ScheduleStatus(BaseModel):
    """One scheduled deployment as the API sees it."""

    deployment: str  # flow/deployment
    schedules: list[str]  # "cron 30 0 * * * (UTC)", "every 3600s", with "(paused)" when inactive
    active: bool  # at least one schedule is active and the deployment itself is not paused
    next_run: dt.datetime | None = None  # expected start of the earliest scheduled run
    last_run: dt.datetime | None = None  # expected start of the latest scheduled run that left SCHEDULED
    last_state: str | None = None  # its state name (Completed, Failed, Running, ...)
    problem: str | None = None  # a sentence when an active schedule has no upcoming run

    def line(self) -> str:
        nxt = f"next {self.next_run:%Y-%m-%d %H:%M} UTC" if self.next_run else "no run scheduled"
        last = (f"last {self.last_run:%Y-%m-%d %H:%M} UTC {self.last_state}" if self.last_run
                else "no scheduled run yet")
        text = f"{self.deployment:<26} {', '.join(self.schedules)}: {nxt}; {last}"
        return text + (f"  PROBLEM: {self.problem}" if self.problem else "")


def describe(schedule: Any) -> str:
    """A schedule in a few words (cron, interval or rrule)."""
    cron = getattr(schedule, "cron", None)
    if cron:
        return f"cron {cron} ({getattr(schedule, 'timezone', None) or 'UTC'})"
    interval = getattr(schedule, "interval", None)
    if interval is not None:
        return f"every {int(interval.total_seconds())}s"
    return f"rrule {getattr(schedule, 'rrule', schedule)}"


def schedule_status(client, project: str) -> list[ScheduleStatus]:
    """Every deployment of ``project`` (its ``project:<name>`` tag) with a schedule, from a synchronous Prefect
    client: declared, next and last runs. Other projects' deployments on the same server are not listed."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    flows = {f.id: f.name for f in client.read_flows()}
    found = []
    for d in sorted(client.read_deployments(), key=lambda d: (flows.get(d.flow_id, ""), d.name)):
        if not d.schedules or project_tag(project) not in d.tags:
            continue
        name = f"{flows.get(d.flow_id, '?')}/{d.name}"
        active = any(s.active for s in d.schedules) and not d.paused

        def runs(states: list[StateType], sort: FlowRunSort, _id=d.id):
            return client.read_flow_runs(flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[_id]), tags=FlowRunFilterTags(all_=[AUTO_SCHEDULED_TAG]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states))), sort=sort, limit=1)

        upcoming = runs([StateType.SCHEDULED], FlowRunSort.EXPECTED_START_TIME_ASC)
        started = runs([t for t in StateType if t != StateType.SCHEDULED], FlowRunSort.EXPECTED_START_TIME_DESC)
        status = ScheduleStatus(
            deployment=name, active=active,
            schedules=[describe(s.schedule) + ("" if s.active else " (paused)") for s in d.schedules],
            next_run=upcoming[0].expected_start_time if upcoming else None,
            last_run=started[0].expected_start_time if started else None,
            last_state=started[0].state_name if started else None)
        # Changing a schedule deletes the deployment's future runs; the scheduler recreates them within its
        # loop (5 s for recently updated deployments, 60 s otherwise). Only a longer gap is a problem.
        settled = d.updated is None or dt.datetime.now(dt.UTC) - d.updated > SCHEDULER_GRACE
        if active and not upcoming and settled:
            status.problem = ("the schedule is active but the server has created no upcoming run: its scheduler "
                              "service is failing (look for tracebacks in prefect-server.log)")
        found.append(status)
    return found
