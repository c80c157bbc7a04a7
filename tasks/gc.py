"""The sweep: remove what interrupted runs left behind, never anything reachable.

What is *reachable* is decided from the records that make things visible, never from names alone:

* a sealed version keeps the ``metadata.json`` its seal names and every artifact that metadata lists;
  anything else under ``models/<name>/<n>/`` is an attempt that lost the seal (a retry wrote its own
  ``attempt-<k>/`` folder, tasks/registry/versions.py) and goes;
* a version with a claim and no seal is a registration that died: its files go once the claim is older
  than the age limit, the claim itself stays (version numbers are never reused);
* a version whose seal or metadata cannot be read or verified is left entirely alone and reported: a sweep
  never deletes around damage it cannot judge;
* ``models/<name>/staging/<token>/``: a candidate that never registered, once its newest file is old;
* the trigger ledger's claims that expired unstarted are marked ``expired`` (a conditional replace), kept;
* the local store's ``.tmp/`` temporaries of writes a killed process never finished.

Everything is judged against one age limit (``gc.min_age_hours``): a run still writing is younger. Rollout
leases and the champion pointer are not swept: one small object each, and deleting them is not conditional
on S3 (a delete racing a takeover would remove a live lease). ``plan_sweep`` only reads; ``sweep`` applies a
plan (``mlcycle gc --dry-run`` prints the plan).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from mlcycle.tasks.lazy_task import NO_CACHE, task
from mlcycle.tasks.monitor.trigger import expire_claim, trigger_records
from mlcycle.tasks.registry.versions import RegistryError, claim_key, load_metadata, metadata_key, read_seal, seal_key
from mlcycle.tasks.storage import ObjectNotFound, ObjectStore, StoreError

_VERSION_DIR = re.compile(r"^models/([^/]+)/(\d+)/")
_STAGING_DIR = re.compile(r"^models/([^/]+)/staging/([^/]+)/")


@dataclass
class SweepPlan:
    """What a sweep removes (key -> why), what it marks, and what it left alone because it could not judge."""

    older_than: dt.datetime
    delete: dict[str, str] = field(default_factory=dict)
    expire_triggers: list[int] = field(default_factory=list)
    temporaries: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"older_than": self.older_than.isoformat(), "delete": self.delete,
                "expire_triggers": self.expire_triggers, "temporaries": self.temporaries, "skipped": self.skipped}

    def summary(self) -> str:
        return (f"{len(self.delete)} unreachable object(s), {len(self.temporaries)} temporary file(s), "
                f"{len(self.expire_triggers)} expired trigger claim(s) older than "
                f"{self.older_than:%Y-%m-%d %H:%M} UTC"
                + (f"; left alone: {len(self.skipped)}" if self.skipped else ""))


def _old(store: ObjectStore, key: str, older_than: dt.datetime) -> bool:
    try:
        return store.modified(key) < older_than
    except ObjectNotFound:
        return False


def reachable_keys(store: ObjectStore, name: str, version: int) -> set[str] | None:
    """The keys a sealed version's seal reaches (the seal, its metadata, every artifact), verified; None if the
    seal or the metadata does not verify."""
    try:
        seal = read_seal(store, name, version)
        metadata = load_metadata(store, name, version)
        return {seal_key(name, version), metadata_key(seal), *(a.key for a in metadata.artifacts.values())}
    except (StoreError, RegistryError, ValueError):
        return None


def plan_sweep(store: ObjectStore, now: dt.datetime, min_age_hours: float) -> SweepPlan:
    older_than = now - dt.timedelta(hours=min_age_hours)
    plan = SweepPlan(older_than=older_than)
    models = store.list("models/")
    by_version: dict[tuple[str, int], list[str]] = {}
    staging: dict[str, list[str]] = {}
    for key in models:
        if m := _VERSION_DIR.match(key):
            by_version.setdefault((m.group(1), int(m.group(2))), []).append(key)
        elif m := _STAGING_DIR.match(key):
            staging.setdefault(m.group(0), []).append(key)
    keys = set(models)
    for (name, version), files in sorted(by_version.items()):
        if seal_key(name, version) in keys:
            reachable = reachable_keys(store, name, version)
            if reachable is None:
                plan.skipped.append(f"models/{name}/{version}/: its seal or metadata does not verify")
                continue
            for key in files:
                if key not in reachable and _old(store, key, older_than):
                    plan.delete[key] = f"v{version} is sealed and nothing it seals is this (a lost attempt)"
        elif claim_key(name, version) in keys:
            if _old(store, claim_key(name, version), older_than) and all(
                    _old(store, key, older_than) for key in files):
                for key in files:
                    plan.delete[key] = f"v{version} was claimed and never sealed (its registration died)"
        else:
            plan.skipped.append(f"models/{name}/{version}/: no claim and no seal")
    for _prefix, files in sorted(staging.items()):
        if all(_old(store, key, older_than) for key in files):
            for key in files:
                plan.delete[key] = "staging of a candidate that was never registered"
    plan.expire_triggers = [r.seq for r in trigger_records(store) if r.status == "claimed" and r.released(now)]
    stale = getattr(store, "stale_temporaries", None)
    if stale is not None:
        plan.temporaries = [str(p) for p in stale(older_than)]
    return plan


def sweep(store: ObjectStore, plan: SweepPlan, now: dt.datetime) -> SweepPlan:
    """Apply a plan made by :func:`plan_sweep` (re-checked where it matters: a trigger is expired only by a
    conditional replace, and only if still the unstarted claim)."""
    for key in plan.delete:
        store.delete(key)
    for seq in plan.expire_triggers:
        expire_claim(store, seq, now)
    for path in plan.temporaries:
        Path(path).unlink(missing_ok=True)
    return plan


def gc(store: ObjectStore, now: dt.datetime, min_age_hours: float, *, dry_run: bool = False) -> SweepPlan:
    plan = plan_sweep(store, now, min_age_hours)
    return plan if dry_run else sweep(store, plan, now)


@task(name="sweep-leftovers", cache_policy=NO_CACHE)
def gc_task(settings) -> dict:
    from mlcycle.tasks.storage import open_store

    plan = gc(open_store(settings), dt.datetime.now(dt.UTC), settings.gc.min_age_hours)
    return {**plan.as_dict(), "summary": plan.summary()}
