"""``mlcycle rollout`` and ``mlcycle deployments``: blue/green rollouts and their records from the shell.

Exit 0 on success, 1 when the work failed (the candidate never became ready, the canary disagreed,
nothing to roll back to; the previous deployment keeps serving), 2 for bad usage or configuration.
"""

from __future__ import annotations

import typer

from mlcycle.flows.cli.common import JSON_OPT, UsageFailure, emit, prepare_flows, read_settings

commands = typer.Typer()
deployments = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="Deployment records: what serves behind the stable endpoint, and the history.")
commands.add_typer(deployments, name="deployments")


@commands.command()
def rollout(
    ctx: typer.Context,
    target: str = typer.Option(None, "--target", help="docker | process (default: rollout.target)"),
    version: str = typer.Option(None, "--version", help="registry version to package and roll out (default: champion)"),
    bento: str = typer.Option(None, "--bento", help="roll out this packaged bento (name:version); skips packaging"),
    image: str = typer.Option(None, "--image", help="--target docker: roll out this serving image as it is"),
    rollback: bool = typer.Option(False, "--rollback", help="return to the deployment live before the current one"),
    as_json: bool = JSON_OPT,
) -> None:
    """Package (unless --bento/--image), then roll out blue/green behind the stable endpoint; or --rollback."""
    if target not in (None, "docker", "process"):
        raise UsageFailure(f"--target must be 'docker' or 'process', got {target!r}")
    if version is not None and not (version.isascii() and version.isdigit() and int(version) >= 1):
        raise UsageFailure(f"--version must be a version number (1, 2, ...), got {version!r}")
    settings = read_settings()
    if bento is not None:
        from mlcycle.flows.rollout import check_bento_tag

        check_bento_tag(bento)  # UnsafeKey: exit 2
    if rollback and (version or bento or image or target):
        raise UsageFailure("--rollback takes no --version, --bento, --image or --target: it returns to the "
                           "previous deployment as it was")
    if sum(x is not None for x in (version, bento, image)) > 1:
        raise UsageFailure("give at most one of --version, --bento and --image")
    if image and target == "process":
        raise UsageFailure("--image needs --target docker")
    if version is not None:  # an unknown version fails here, before any flow or server starts
        from mlcycle.tasks.registry.versions import load_metadata, model_name
        from mlcycle.tasks.storage import open_store

        load_metadata(open_store(settings), model_name(settings), int(version))
    prepare_flows(ctx, settings)
    from mlcycle.flows.rollout import rollout_flow

    record = rollout_flow(bento_tag=bento, version=int(version) if version else None,
                          target="docker" if image and not target else target, image=image, rollback=rollback)
    t = record.timings
    human = [f"live: {record.model_name} v{record.model_version} ({record.target}) behind {record.endpoint_url}",
             f"deployment {record.id} ({record.kind}); replaces {record.previous_id or 'nothing'}"]
    human.append("timings: " + ", ".join(f"{k.removesuffix('_seconds').replace('_', ' ')} {v:.1f}s"
                                         for k, v in t.model_dump().items() if v is not None))
    human += [f"note: {n}" for n in record.notes]
    emit(as_json, record.model_dump(mode="json"), "\n".join(human))


def _store():
    from mlcycle.tasks.storage import open_store

    settings = read_settings()
    return settings, open_store(settings)


@deployments.command("list")
def deployments_list(
    limit: int = typer.Option(20, "--limit", min=1, help="the newest N attempts"),
    as_json: bool = JSON_OPT,
) -> None:
    """Every rollout attempt, newest first: live, retired and failed ones (with the reason)."""
    from mlcycle.tasks.rollout.orchestrate import history

    _, store = _store()
    records = history(store, limit=limit)
    emit(as_json, [r.model_dump(mode="json") for r in records],
         "\n".join(f"{r.requested_at:%Y-%m-%d %H:%M:%S}  {r.summary()}" for r in records)
         or "no deployments yet (mlcycle rollout)")


@deployments.command("current")
def deployments_current(as_json: bool = JSON_OPT) -> None:
    """The live deployment, the stable endpoint's URL, and whether both actually run."""
    from mlcycle.tasks.rollout.orchestrate import current_status

    settings, store = _store()
    status = current_status(settings, store)
    d = status.deployment
    if d is None:
        human = f"no deployment is live; the stable endpoint would be {status.endpoint_url}"
    else:
        serves = status.endpoint_serves
        human = "\n".join([
            f"{d.model_name} v{d.model_version} ({d.target}) live since {d.live_since:%Y-%m-%d %H:%M:%S} UTC",
            f"stable endpoint: {status.endpoint_url}  "
            + ("up" if status.endpoint_running else "DOWN (start it again with `mlcycle rollout --bento "
                                                     f"{d.bento_tag}`)")
            + ("" if serves in (None, d.id) else f"  (proxies to {serves}, not {d.id}!)"),
            f"backend: {d.backend.url if d.backend else '-'}  "
            + {True: "up", False: "DOWN", None: "unknown"}[status.backend_alive],
            f"deployment {d.id}: bento {d.bento_tag}" + (f", image {d.image}" if d.image else "")
            + (f", flow run {d.flow_run_id}" if d.flow_run_id else ""),
        ])
    emit(as_json, status.model_dump(mode="json"), human)
