"""``mlcycle ingest``, ``mlcycle validate``, ``mlcycle partitions`` and ``mlcycle gc``: the store from the shell.

Exit 1 when a batch was quarantined or a date could not be ingested (the backfill still completes every
other date first); exit 2 for a malformed or reversed date, an unknown source or zone, or a source that
cannot serve the declaration (the landing zone without its path, the simulator for another dataset), all
found before any flow starts.
"""

from __future__ import annotations

import typer

from mlcycle.flows.cli.common import (
    JSON_OPT,
    UsageFailure,
    check_dates,
    emit,
    prepare_flows,
    read_settings,
    run_with_progress,
)

commands = typer.Typer()


def _manifest_line(m) -> str:
    """One partition manifest as a line: date, zone, rows, checksum, verdict, key."""
    verdict = ""
    if m.validation is not None:
        verdict = " passed" if m.validation.success else f" FAILED ({len(m.validation.failed)} expectations)"
    return f"{m.date}  {m.zone:<10} {m.rows:>8} rows  sha256 {m.data_sha256[:16]}{verdict}  {m.data_key}"


@commands.command()
def ingest(
    ctx: typer.Context,
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
    check_dates(date, start, end)
    settings = read_settings()
    _check_source(settings, source)
    prepare_flows(ctx, settings)
    if date:
        from mlcycle.flows.ingest import ingest_flow

        manifest = ingest_flow(date=date, source=source, replace=replace)
        emit(as_json, manifest.model_dump(mode="json"), _manifest_line(manifest))
        return
    from mlcycle.flows.ingest import backfill_flow

    report = run_with_progress(backfill_flow, show=not as_json, start=start, end=end, source=source,
                               concurrency=concurrency, replace=replace)
    emit(as_json, [o.model_dump(mode="json") for o in report.outcomes],
         "\n".join(_manifest_line(o.manifest) for o in report.outcomes if o.manifest))


def _check_source(settings, source: str | None) -> None:
    """The source the run would read, checked before anything starts (tasks/sources.py: chosen_source)."""
    from mlcycle.tasks.sources import SourceError, chosen_source

    try:
        chosen_source(settings, source)
    except SourceError as exc:
        raise UsageFailure(str(exc)) from None


@commands.command()
def validate(
    ctx: typer.Context,
    date: str = typer.Option(..., "--date", help="logical date YYYY-MM-DD of a raw partition"),
    replace: bool = typer.Option(False, "--replace", help="supersede a validated partition with other data"),
    as_json: bool = JSON_OPT,
) -> None:
    """Re-validate a raw partition and publish or quarantine it."""
    from mlcycle.tasks.partitions import PartitionNotFound, list_partitions
    from mlcycle.tasks.sources import parse_date
    from mlcycle.tasks.storage import open_store

    check_dates(date)
    settings = read_settings()
    if parse_date(date) not in list_partitions(open_store(settings), "raw"):
        raise PartitionNotFound(f"no raw partition for {date}: ingest it first (mlcycle ingest --date {date})")
    prepare_flows(ctx, settings)
    from mlcycle.flows.ingest import validate_flow

    manifest = validate_flow(date=date, replace=replace)
    emit(as_json, manifest.model_dump(mode="json"), _manifest_line(manifest))


@commands.command()
def partitions(
    zone: str = typer.Option("validated", "--zone", help="raw | validated | quarantine"),
    as_json: bool = JSON_OPT,
) -> None:
    """List the partitions of a zone with their manifests."""
    from mlcycle.tasks.partitions import list_partitions, read_manifest
    from mlcycle.tasks.storage import open_store

    if zone not in ("raw", "validated", "quarantine"):
        raise UsageFailure(f"--zone must be raw, validated or quarantine, got {zone!r}")
    store = open_store(read_settings())
    manifests = [read_manifest(store, zone, d) for d in list_partitions(store, zone)]
    emit(as_json, [m.model_dump(mode="json") for m in manifests],
         "\n".join(_manifest_line(m) for m in manifests) or f"no {zone} partitions")


@commands.command()
def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be removed, remove nothing"),
    older_than_hours: float = typer.Option(None, "--older-than-hours", min=0,
                                           help="only leftovers older than this many hours "
                                                "(default: gc.min_age_hours)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Sweep what interrupted runs left behind (never anything a seal, pointer or ledger reaches)."""
    import datetime as dt

    from mlcycle.tasks.gc import gc as sweep
    from mlcycle.tasks.storage import open_store

    settings = read_settings()
    age = settings.gc.min_age_hours if older_than_hours is None else older_than_hours
    plan = sweep(open_store(settings), dt.datetime.now(dt.UTC), age, dry_run=dry_run)
    lines = [f"{'would remove' if dry_run else 'removed'} {plan.summary()}"]
    lines += [f"  {key}  ({why})" for key, why in sorted(plan.delete.items())]
    lines += [f"  {path}  (temporary of an unfinished write)" for path in plan.temporaries]
    lines += [f"  trigger #{seq}  (claim expired unstarted: marked expired)" for seq in plan.expire_triggers]
    lines += [f"  left alone: {why}" for why in plan.skipped]
    emit(as_json, {"dry_run": dry_run, **plan.as_dict()}, "\n".join(lines))
