"""``mlcycle up``, ``mlcycle down`` and ``mlcycle status``: the local stack and what it holds.

``status`` reads everything it shows from where it lives: the stack's pid files, the object store, and the
Prefect API for each schedule's next and last scheduled run (the runs the scheduler really created).
"""

from __future__ import annotations

import typer

from mlcycle.flows.cli.common import JSON_OPT, emit, read_settings, stack_api

commands = typer.Typer()


@commands.command()
def up(as_json: bool = JSON_OPT) -> None:
    """Start the local stack: Prefect server + UI, deployments, a process worker; idempotent."""
    from mlcycle.tasks import stack

    settings = read_settings()
    stack.up(settings)
    running = stack.services(settings)
    info = {"prefect_ui": f"http://127.0.0.1:{stack.prefect_port()}", "prefect_api": stack.prefect_api_url(),
            "work_pool": settings.work_pool, "services": [s.__dict__ for s in running]}
    emit(as_json, info, f"Prefect UI  {info['prefect_ui']}\nPrefect API {info['prefect_api']}\n"
         f"deployments: prefect.yaml deployed to work pool {settings.work_pool}\n"
         f"running: {', '.join(f'{s.name} (pid {s.pid})' for s in running)}\n"
         "stop with: make down (or mlcycle down)")


@commands.command()
def down(as_json: bool = JSON_OPT) -> None:
    """Stop what `mlcycle up` / `make demo` started, and only that."""
    from mlcycle.tasks import stack
    from mlcycle.tasks.rollout.orchestrate import teardown

    settings = read_settings()
    stopped = teardown(settings) + stack.down(settings)
    emit(as_json, {"stopped": stopped}, f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@commands.command()
def status(as_json: bool = JSON_OPT) -> None:
    """What runs in the local stack, the champion, the live deployment and the last monitor decision."""
    from mlcycle.tasks import stack
    from mlcycle.tasks.monitor.trigger import last_decision
    from mlcycle.tasks.partitions import list_partitions
    from mlcycle.tasks.registry.versions import model_name, read_alias
    from mlcycle.tasks.rollout.orchestrate import read_current
    from mlcycle.tasks.storage import open_store

    settings = read_settings()
    api = stack_api(settings)  # the stack's server when it runs; status never starts one
    running = [{**s.__dict__, "alive": s.alive()} for s in stack.services(settings)]
    store = open_store(settings)
    zones = {z: len(list_partitions(store, z)) for z in ("raw", "validated", "quarantine")}
    champion = read_alias(store, model_name(settings))
    current = read_current(store)
    decision = last_decision(store)
    schedules = _schedules(api, settings.project_name)
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
    emit(as_json, info, "\n".join(lines))


def _schedules(api: str | None, project: str):
    """Each of the project's scheduled deployments' next and last scheduled run, from the Prefect API; None when
    none answers."""
    import httpx

    if not api:
        return None
    from prefect.client.orchestration import get_client

    from mlcycle.tasks.schedules import schedule_status

    try:
        with get_client(sync_client=True) as client:
            return schedule_status(client, project)
    except (httpx.HTTPError, OSError):
        return None
