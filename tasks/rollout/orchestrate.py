"""Blue/green rollouts behind the stable endpoint, with automatic rollback; the deployment records.

One rollout, whatever the target (tasks/rollout/targets.py)::

    resolve the bento ─▶ build the image (docker) ─▶ start the candidate on a free port ─▶ wait for /readyz
      ─▶ canary check (test-serving's own check, tasks/serving/client.py: check_running, against the
      candidate) ─▶ switch the stable endpoint (tasks/rollout/endpoint.py) ─▶ wait until in-flight requests
      drained ─▶ stop the previous backend

Failure anywhere before the switch (build, start, readiness, canary, latency budget, switch) stops the
candidate, leaves the live deployment serving untouched, records the attempt with its stage and reason,
and raises :class:`RolloutFailed`. A failure *after* the switch (stopping the previous backend) does
not undo the switch: it is recorded on the deployment as a note.

Records (typed, tasks/records/rollout.py, in the object store)::

    deployments/current.json                 the live Deployment (what serves behind the stable URL)
    deployments/history/<ts>-<id>.json       every attempt: live, retired, failed (with stage + reason)
    deployments/lock                         the rollout lease (tasks/storage/lease.py: renewed while a
                                             rollout runs, free rollout.lease_seconds after its holder died)

:func:`rollback` rolls out the deployment that was live before the current one (its image or bento,
started fresh, canary-checked, switched); a second rollback returns to where the first started.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from mlcycle.tasks import stack
from mlcycle.tasks.records.rollout import (
    CURRENT_KEY,
    HISTORY_PREFIX,
    Backend,
    CanarySummary,
    CurrentStatus,
    Deployment,
    Stage,
)
from mlcycle.tasks.records.serving import CanaryReport, LatencyReport
from mlcycle.tasks.rollout import endpoint, images
from mlcycle.tasks.rollout.targets import HOME_LABEL, RolloutError, Target, home_label, make_target, stop_process_tree
from mlcycle.tasks.serving.client import check_running
from mlcycle.tasks.serving.process import free_port
from mlcycle.tasks.settings import Settings
from mlcycle.tasks.storage import ObjectNotFound, ObjectStore
from mlcycle.tasks.storage.lease import Lease, LeaseHeld, leased

LOCK_KEY = "deployments/lock"  # the rollout lease

# The canary check: (store, settings, candidate url, model name, model version) -> its two reports.
CanaryFn = Callable[[ObjectStore, Settings, str, str, int], tuple[CanaryReport, LatencyReport]]


class RolloutFailed(RolloutError):
    """An attempt failed; the live deployment is unchanged. ``record`` is the failed attempt."""

    def __init__(self, message: str, record: Deployment) -> None:
        super().__init__(message)
        self.record = record


# --------------------------------------------------------------------------------------------------
# the records and the lock
# --------------------------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _save(store: ObjectStore, record: Deployment) -> None:
    store.put_bytes(record.history_key, record.model_dump_json(indent=1).encode())


def read_current(store: ObjectStore) -> Deployment | None:
    """The live deployment (None before the first rollout)."""
    try:
        return Deployment.model_validate_json(store.get_bytes(CURRENT_KEY))
    except ObjectNotFound:
        return None


def history(store: ObjectStore, limit: int | None = None) -> list[Deployment]:
    """Every attempt, newest first."""
    keys = sorted((k for k in store.list(HISTORY_PREFIX) if k.endswith(".json")), reverse=True)
    return [Deployment.model_validate_json(store.get_bytes(k)) for k in keys[:limit]]


def find(store: ObjectStore, deployment_id: str) -> Deployment:
    for key in store.list(HISTORY_PREFIX):
        if key.endswith(f"-{deployment_id}.json"):
            return Deployment.model_validate_json(store.get_bytes(key))
    raise RolloutError(f"no deployment {deployment_id!r} in {store.uri(HISTORY_PREFIX)}")


@contextlib.contextmanager
def deployment_lock(store: ObjectStore, owner: str, *, ttl_seconds: float) -> Iterator[Lease]:
    """One rollout at a time: the lease ``deployments/lock`` (tasks/storage/lease.py), renewed while the
    rollout runs however long its build takes, free after ``ttl_seconds`` if its holder dies (at once when
    the holder was a process of this host that is gone). Held by a live rollout: RolloutError at once."""
    try:
        with leased(store, LOCK_KEY, owner, ttl_seconds=ttl_seconds) as lease:
            yield lease
    except LeaseHeld as exc:
        raise RolloutError(f"another rollout holds the lease: {exc}") from None


# --------------------------------------------------------------------------------------------------
# rollout and rollback
# --------------------------------------------------------------------------------------------------


def bento_labels(settings: Settings, bento_tag: str) -> dict[str, str]:
    """The labels `mlcycle package` put on a bento (model_name, model_version, ...)."""
    import yaml

    from mlcycle.tasks.serving.packaging import bento_dir, bentoml_home

    path = bento_dir(settings, bento_tag) / "bento.yaml"
    if not path.is_file():
        raise RolloutError(f"bento {bento_tag!r} is not in the BentoML store at {bentoml_home(settings)}; "
                           "package it first (mlcycle package)")
    return {str(k): str(v) for k, v in (yaml.safe_load(path.read_text()).get("labels") or {}).items()}


def rollout(settings: Settings, store: ObjectStore, *, bento_tag: str | None = None, image: str | None = None,
            target: str | None = None, flow_run_id: str | None = None, canary: CanaryFn | None = check_running,
            _kind: Literal["rollout", "rollback"] = "rollout", _rollback_of: str | None = None) -> Deployment:
    """Roll out ``bento_tag`` (or, docker only, an existing ``image``) blue/green behind the stable endpoint.

    Returns the live Deployment; raises RolloutFailed (previous deployment untouched) otherwise.
    ``canary=None`` skips the canary check (tests of the switching mechanics only).
    """
    if not (bento_tag or image):
        raise RolloutError("give the bento to roll out (or, for --target docker, an image)")
    runner = make_target(settings, target)
    if image and runner.name != "docker":
        raise RolloutError("an image can only be rolled out with --target docker")
    requested = _now()
    record = Deployment(id=uuid.uuid4().hex[:10], kind=_kind, target=runner.name, bento_tag=bento_tag, image=image,
                        endpoint_url=endpoint.endpoint_url(settings), flow_run_id=flow_run_id, requested_at=requested,
                        rollback_of=_rollback_of)
    with deployment_lock(store, owner=f"{_kind} {record.id}", ttl_seconds=settings.rollout.lease_seconds) as lease:
        current = read_current(store)
        record.previous_id = current.id if current else None
        return _attempt(settings, store, runner, record, current, canary, time.monotonic(), lease.check)


def _attempt(settings: Settings, store: ObjectStore, runner: Target, record: Deployment, current: Deployment | None,
             canary: CanaryFn | None, started: float, still_ours: Callable[[], None]) -> Deployment:
    cfg = settings.rollout
    stage: Stage = "resolve"
    backend: Backend | None = None
    try:
        if record.bento_tag and not (record.model_name and record.model_version):
            labels = bento_labels(settings, record.bento_tag)
            record.model_name = labels.get("model_name")
            record.model_version = labels.get("model_version")
        stage = "build"
        runner.prepare(record)
        _save(store, record)
        stage = "start"
        backend = runner.start(record, free_port())
        record.backend = backend
        _save(store, record)
        stage = "ready"
        record.timings.start_to_ready_seconds = runner.wait_ready(backend, cfg.readiness_timeout_seconds)
        if canary is not None:
            stage = "canary"
            if not (record.model_name and record.model_version and record.model_version.isdigit()):
                raise RolloutError(f"the canary check needs the registry model and version; "
                                   f"{record.bento_tag or record.image} names model {record.model_name!r} "
                                   f"version {record.model_version!r}")
            t = time.monotonic()
            record.canary = CanarySummary.of(*canary(store, settings, backend.url, record.model_name,
                                                     int(record.model_version)))
            record.timings.canary_seconds = round(time.monotonic() - t, 2)
        stage = "switch"
        still_ours()  # the lease was not taken over while this rollout built, started and checked its candidate
        upstream = endpoint.Upstream(deployment_id=record.id, host=backend.host, port=backend.port)
        if endpoint.is_running(settings):
            report = endpoint.switch_endpoint(settings, upstream)
            record.timings.switch_seconds, record.timings.drain_seconds = report.switch_seconds, report.drain_seconds
            if not report.drained:
                record.notes.append(f"old proxy workers still had requests after {cfg.drain_seconds:.0f}s "
                                    "(rollout.drain_seconds); the previous backend was stopped anyway")
        else:
            t = time.monotonic()
            endpoint.start_endpoint(settings, upstream)
            record.timings.switch_seconds, record.timings.drain_seconds = round(time.monotonic() - t, 3), 0.0
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, then re-raised as RolloutFailed
        if backend is not None:
            with contextlib.suppress(Exception):
                runner.stop(backend, grace=5)
        record.status, record.failed_stage, record.ended_at = "failed", stage, _now()
        record.reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:1500]}"
        record.timings.total_seconds = round(time.monotonic() - started, 2)
        _save(store, record)
        live = f"{current.model_name} v{current.model_version} ({current.id}) keeps serving" if current else \
            "nothing was serving before, nothing serves now"
        raise RolloutFailed(f"rollout {record.id} of {record.model_name} v{record.model_version} failed at "
                            f"{stage}: {record.reason}; {live}", record) from exc

    record.status, record.live_since = "live", _now()
    store.put_bytes(CURRENT_KEY, record.model_dump_json(indent=1).encode())
    _save(store, record)
    if current is not None:
        _retire(settings, store, current, record)
    record.timings.total_seconds = round(time.monotonic() - started, 2)
    store.put_bytes(CURRENT_KEY, record.model_dump_json(indent=1).encode())
    _save(store, record)
    return record


def _retire(settings: Settings, store: ObjectStore, old: Deployment, new: Deployment) -> None:
    """Stop the previous backend (the endpoint no longer sends it anything) and mark it retired."""
    t = time.monotonic()
    if old.backend is not None:
        try:
            make_target(settings, old.target).stop(old.backend, settings.rollout.stop_grace_seconds)
        except Exception as exc:  # noqa: BLE001 - the switch happened; a leftover backend is only a note
            new.notes.append(f"could not stop the previous backend {old.backend.url} ({old.id}): {exc}")
    new.timings.stop_previous_seconds = round(time.monotonic() - t, 2)
    old.status, old.ended_at, old.replaced_by = "retired", _now(), new.id
    _save(store, old)


def rollback(settings: Settings, store: ObjectStore, *, flow_run_id: str | None = None,
             canary: CanaryFn | None = check_running) -> Deployment:
    """Return to the deployment that was live before the current one (same image or bento, started fresh)."""
    current = read_current(store)
    if current is None:
        raise RolloutError("nothing to roll back: no deployment is live (deployments/current.json is absent)")
    if current.previous_id is None:
        raise RolloutError(f"nothing to roll back to: {current.id} ({current.model_name} v{current.model_version}) "
                           "is the first deployment")
    previous = find(store, current.previous_id)
    return rollout(settings, store, bento_tag=previous.bento_tag,
                   image=previous.image if previous.target == "docker" else None, target=previous.target,
                   flow_run_id=flow_run_id, canary=canary, _kind="rollback", _rollback_of=current.id)


# --------------------------------------------------------------------------------------------------
# status and teardown
# --------------------------------------------------------------------------------------------------


def current_status(settings: Settings, store: ObjectStore) -> CurrentStatus:
    current = read_current(store)
    alive = None
    if current is not None and current.backend is not None:
        with contextlib.suppress(Exception):
            alive = make_target(settings, current.target).alive(current.backend)
    return CurrentStatus(deployment=current, endpoint_url=endpoint.endpoint_url(settings),
                         endpoint_running=endpoint.is_running(settings),
                         endpoint_serves=endpoint.serving_deployment(settings), backend_alive=alive)


def teardown(settings: Settings) -> list[str]:
    """Stop the endpoint, every serving process of this home and every mlcycle serving container."""
    stopped = []
    if endpoint.stop_endpoint(settings):
        stopped.append(endpoint.SERVICE_NAME)
    for service in stack.services(settings):
        if service.name.startswith("serving-"):
            stop_process_tree(service.pid, 10) if service.alive() else None
            (settings.run_dir / f"{service.name}.json").unlink(missing_ok=True)
            stopped.append(service.name)
    # no engine answering: no containers to remove
    with contextlib.suppress(Exception), contextlib.closing(images.docker_client(timeout=30)) as client:
        mine = {"label": f"{HOME_LABEL}={home_label(settings)}"}
        for container in client.containers.list(all=True, filters=mine):
            container.remove(force=True)
            shutil.rmtree(Path(settings.run_dir).resolve() / "secrets" / container.name, ignore_errors=True)
            stopped.append(container.name)
    return stopped


# --------------------------------------------------------------------------------------------------
# Prefect tasks: thin wrappers (flows/rollout.py). No retries: a failed attempt is recorded, not repeated.
# --------------------------------------------------------------------------------------------------

from mlcycle.tasks.lazy_task import NO_CACHE, task  # noqa: E402


@task(name="rollout", cache_policy=NO_CACHE, task_run_name="rollout-{target}")
def rollout_task(settings: Settings, bento_tag: str | None, image: str | None, target: str,
                 flow_run_id: str | None) -> Deployment:
    from mlcycle.tasks.storage import open_store

    return rollout(settings, open_store(settings), bento_tag=bento_tag, image=image, target=target,
                   flow_run_id=flow_run_id)


@task(name="rollback", cache_policy=NO_CACHE)
def rollback_task(settings: Settings, flow_run_id: str | None) -> Deployment:
    from mlcycle.tasks.storage import open_store

    return rollback(settings, open_store(settings), flow_run_id=flow_run_id)
