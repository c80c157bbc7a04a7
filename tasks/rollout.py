"""Rollout: blue/green deployments of a packaged model behind one stable URL, with automatic rollback.

One rollout, whatever the target::

    resolve the bento ─▶ build the image (docker) ─▶ start the candidate on a free port ─▶ wait for /readyz
      ─▶ canary check (the test-serving check of tasks.serving against the candidate) ─▶ switch the stable
      endpoint (tasks.endpoint) ─▶ wait until in-flight requests drained ─▶ stop the previous backend

Targets (one small protocol, :class:`Target`):

* ``process`` -- a local ``bentoml serve`` process (tasks.serving.start_serving), registered as a stack
  service (pid file under ``<home>/run/``) so ``mlcycle down`` stops it; the embedded default.
* ``docker``  -- a container of the serving image (tasks.images), host networking, started through the
  Docker Engine API (``docker`` SDK); it survives the CLI and restarts with the engine.

Failure anywhere before the switch (build, start, readiness, canary, latency budget, switch) stops the
candidate, leaves the live deployment serving untouched, records the attempt with its stage and reason,
and raises :class:`RolloutFailed`. A failure *after* the switch (stopping the previous backend) does
not undo the switch: it is recorded on the deployment as a note.

Records (typed, in the object store)::

    deployments/current.json                 the live Deployment (what serves behind the stable URL)
    deployments/history/<ts>-<id>.json       every attempt: live, retired, failed (with stage + reason)
    deployments/lock                         held during a rollout (exclusive create; stale after 1 h)

:func:`rollback` rolls out the deployment that was live before the current one (its image or bento,
started fresh, canary-checked, switched); a second rollback returns to where the first started.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from mlcycle.tasks import endpoint, stack
from mlcycle.tasks.settings import Settings
from mlcycle.tasks.storage import ObjectNotFound, ObjectStore

CURRENT_KEY = "deployments/current.json"
HISTORY_PREFIX = "deployments/history/"
LOCK_KEY = "deployments/lock"
LOCK_STALE_SECONDS = 3600.0
CONTAINER_PREFIX = "mlcycle-serving-"
CONTAINER_UID = 10001  # the serving image's user (infra/Dockerfile.serving)
CONTAINER_HOME = "/home/mlcycle/data"  # MLCYCLE_HOME in the container (inference-log spills)
CONTAINER_SECRETS_DIR = "/run/secrets"
# the only writable places of a serving container (its root file system is read-only)
CONTAINER_TMPFS = {"/tmp": "rw,nosuid,nodev,size=64m", "/home/mlcycle/bentoml": "rw,nosuid,nodev,size=64m",
                   CONTAINER_HOME: "rw,nosuid,nodev,size=256m"}
MANAGED_LABEL = "io.mlcycle.managed-by"
DEPLOYMENT_LABEL = "io.mlcycle.deployment-id"
HOME_LABEL = "io.mlcycle.home"  # containers of one MLCYCLE_HOME (teardown stops only those)

TargetName = Literal["process", "docker"]
Stage = Literal["resolve", "build", "start", "ready", "canary", "switch"]


class RolloutError(RuntimeError):
    """Rollout could not run at all (nothing to roll back to, a rollout in progress, bad input)."""


class RolloutFailed(RolloutError):
    """An attempt failed; the live deployment is unchanged. ``record`` is the failed attempt."""

    def __init__(self, message: str, record: Deployment) -> None:
        super().__init__(message)
        self.record = record


class NotReady(RuntimeError):
    """The candidate did not become ready (exited, crash loop, timeout); the message has its log tail."""


# --------------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------------


class Backend(BaseModel):
    """A running serving backend: where it listens and how to stop it."""

    target: TargetName
    host: str = "127.0.0.1"
    port: int
    pid: int | None = None             # process: `bentoml serve` (its own process group)
    service: str | None = None         # process: the stack service name (pid file under <home>/run/)
    log: str | None = None
    container_id: str | None = None    # docker
    container_name: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Timings(BaseModel):
    build_seconds: float | None = None           # docker image build (0 when the image existed)
    start_to_ready_seconds: float | None = None  # candidate started -> /readyz 200
    canary_seconds: float | None = None
    switch_seconds: float | None = None          # endpoint reload -> the new backend answers
    drain_seconds: float | None = None           # reload -> every old worker finished its requests
    stop_previous_seconds: float | None = None
    total_seconds: float | None = None


class CanarySummary(BaseModel):
    rows: int
    max_abs_diff: float
    tolerance: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_budget_ms: float


class Deployment(BaseModel):
    """One rollout attempt and, if it went live, the deployment it became."""

    id: str
    kind: Literal["rollout", "rollback"] = "rollout"
    status: Literal["starting", "live", "retired", "failed"] = "starting"
    target: TargetName
    model_name: str | None = None
    model_version: str | None = None
    bento_tag: str | None = None
    image: str | None = None        # docker: the image tag ...
    image_id: str | None = None     # ... and its id
    backend: Backend | None = None
    endpoint_url: str
    flow_run_id: str | None = None
    requested_at: dt.datetime
    live_since: dt.datetime | None = None
    ended_at: dt.datetime | None = None   # failed, or retired (replaced by another deployment)
    previous_id: str | None = None        # the deployment that was live when this attempt started
    rollback_of: str | None = None        # kind rollback: the deployment it replaced
    replaced_by: str | None = None        # status retired: the deployment that replaced it
    failed_stage: Stage | None = None
    reason: str | None = None
    notes: list[str] = Field(default_factory=list)
    canary: CanarySummary | None = None
    timings: Timings = Field(default_factory=Timings)

    @property
    def history_key(self) -> str:
        return f"{HISTORY_PREFIX}{self.requested_at.strftime('%Y%m%dT%H%M%S%fZ')}-{self.id}.json"

    def summary(self) -> str:
        what = f"{self.model_name} v{self.model_version}" if self.model_version else "?"
        where = self.image or self.bento_tag or "?"
        if self.status == "failed":
            return f"{self.id} FAILED at {self.failed_stage}: {what} ({self.target}, {where}): {self.reason}"
        since = f" since {self.live_since:%Y-%m-%d %H:%M:%S}Z" if self.live_since else ""
        return f"{self.id} {self.status}{since}: {what} ({self.target}, {where}) behind {self.endpoint_url}"


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
def deployment_lock(store: ObjectStore, owner: str) -> Iterator[None]:
    """One rollout at a time (exclusive create of deployments/lock; a lock of a dead local process or
    older than an hour is taken over)."""
    payload = json.dumps({"owner": owner, "pid": os.getpid(), "host": socket.gethostname(),
                          "at": _now().isoformat()}).encode()
    if not store.create_exclusive(LOCK_KEY, payload):
        try:
            held = json.loads(store.get_bytes(LOCK_KEY))
        except (ObjectNotFound, ValueError):
            held = {}
        age = (_now() - dt.datetime.fromisoformat(held["at"])).total_seconds() if "at" in held else 0.0
        dead = held.get("host") == socket.gethostname() and not stack.pid_alive(int(held.get("pid", 0) or 0))
        if not (dead or age > LOCK_STALE_SECONDS):
            raise RolloutError(f"another rollout ({held.get('owner')}, pid {held.get('pid')} on {held.get('host')}, "
                               f"since {held.get('at')}) holds {store.uri(LOCK_KEY)}; wait for it to finish")
        store.delete(LOCK_KEY)
        if not store.create_exclusive(LOCK_KEY, payload):
            raise RolloutError(f"another rollout took {store.uri(LOCK_KEY)} at the same moment; try again")
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            store.delete(LOCK_KEY)


# --------------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------------


class Target(Protocol):
    """Where a deployment runs. ``prepare`` may build; ``start`` must not block on readiness."""

    name: TargetName

    def prepare(self, record: Deployment) -> None: ...
    def start(self, record: Deployment, port: int) -> Backend: ...
    def wait_ready(self, backend: Backend, timeout: float) -> float: ...
    def alive(self, backend: Backend) -> bool: ...
    def stop(self, backend: Backend, grace: float) -> None: ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessTarget:
    """``bentoml serve <bento>`` on the host, in its own process group, registered as a stack service."""

    name: TargetName = "process"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._running: dict[int, object] = {}  # port -> tasks.serving.ServeProcess started here

    def prepare(self, record: Deployment) -> None:
        if not record.bento_tag:
            raise RolloutError("the process target needs a bento tag")

    def start(self, record: Deployment, port: int) -> Backend:
        from mlcycle.tasks import serving

        service = f"serving-{record.id}"
        log = self.settings.run_dir / f"{service}.log"
        process = serving.start_serving(self.settings, record.bento_tag, port=port, log_path=log)
        self._running[port] = process
        # The same pid-file format as tasks.stack, so `mlcycle down` / `mlcycle status` see the backend.
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        (self.settings.run_dir / f"{service}.json").write_text(json.dumps(
            {"name": service, "pid": process.pid, "url": process.url, "log": str(log)}))
        return Backend(target="process", port=port, pid=process.pid, service=service, log=str(log))

    def wait_ready(self, backend: Backend, timeout: float) -> float:
        from mlcycle.tasks import serving

        process = self._running.get(backend.port)
        if process is None:
            raise NotReady(f"no process of this rollout listens on port {backend.port}")
        try:
            return serving.wait_ready(process, timeout)
        except serving.ServeFailed as exc:
            raise NotReady(str(exc)) from None

    def alive(self, backend: Backend) -> bool:
        return bool(backend.pid and stack.pid_alive(backend.pid))

    def stop(self, backend: Backend, grace: float) -> None:
        process = self._running.pop(backend.port, None)
        if process is not None:
            process.stop(grace)
        elif backend.pid:
            stop_process_tree(backend.pid, grace)
        if backend.service:
            (self.settings.run_dir / f"{backend.service}.json").unlink(missing_ok=True)


def stop_process_tree(pid: int, grace: float) -> None:
    """SIGTERM a `bentoml serve` started by another process (its group, then its workers), KILL after ``grace``."""
    import signal

    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        children = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and stack.pid_alive(pid):
        time.sleep(0.1)
    if stack.pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


class DockerTarget:
    """A container of the serving image, host networking, restarted by the engine unless stopped.

    Locked down: non-root (the image's uid 10001), a read-only root file system with tmpfs only where
    the service writes (/tmp, BentoML's home for its metrics files, MLCYCLE_HOME for inference-log
    spills), no capabilities, no-new-privileges. Secrets (S3 keys, the API token) are never container
    environment variables, which ``docker inspect`` shows to anyone with engine access: they are files
    (0400, owned by the container's user) in a folder per container under ``<home>/run/secrets/`` (0700),
    mounted read-only at /run/secrets, where the service's settings read them (tasks.settings). The
    folder is removed with the container.
    """

    name: TargetName = "docker"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def prepare(self, record: Deployment) -> None:
        from mlcycle.tasks import images

        images.ensure_engine(self.settings)
        if record.image is None:
            started = time.monotonic()
            image = images.build_serving_image(self.settings, record.bento_tag, model_name=record.model_name,
                                               model_version=record.model_version)
            record.image, record.image_id = image.tag, image.id
            record.timings.build_seconds = round(time.monotonic() - started, 2) if image.built else 0.0
            return
        info = images.image_info(record.image)
        if info is None and record.bento_tag and record.image == images.image_tag(self.settings, record.bento_tag):
            record.image = None  # removed since (a rollback to an old deployment): build it again from its bento
            return self.prepare(record)
        if info is None:
            raise RolloutError(f"image {record.image} is not in the Docker engine; build it first "
                               "(or roll out its bento)")
        labels = info["Config"].get("Labels") or {}
        record.image_id = info["Id"]
        record.bento_tag = record.bento_tag or labels.get(f"{images.LABEL_PREFIX}bento-tag")
        record.model_name = record.model_name or labels.get(f"{images.LABEL_PREFIX}model-name")
        record.model_version = record.model_version or labels.get(f"{images.LABEL_PREFIX}model-version")
        record.timings.build_seconds = 0.0

    def _environment(self, port: int) -> dict[str, str]:
        """The service's settings for the container: the caller's store and serving section.

        A container cannot write the host's local store (it runs as uid 10001 in its own file
        system), so with ``store: local`` its inference log is off; with ``store: minio`` it logs to
        the same bucket over the host network.
        """
        s = self.settings
        serving = s.serving.model_copy(deep=True)
        serving.bentoml_home = None
        if s.store == "local":
            serving.inference_log.enabled = False
        env = {"BENTOML_PORT": str(port), "BENTOML_HOST": "127.0.0.1", "MLCYCLE_HOME": CONTAINER_HOME,
               "MLCYCLE_STORE": s.store, "MLCYCLE_SERVING": serving.model_dump_json(),
               "MLCYCLE_SECRETS_DIR": CONTAINER_SECRETS_DIR}
        if s.store == "minio":
            env.update({"MLCYCLE_S3_ENDPOINT": s.s3_endpoint, "MLCYCLE_S3_BUCKET": s.s3_bucket,
                        "MLCYCLE_S3_SECURE": str(s.s3_secure).lower(), "MLCYCLE_S3_REGION": s.s3_region})
        return env

    def _secrets(self) -> dict[str, str]:
        """Secret file name (as tasks.settings reads it) -> value, for the secrets that are set."""
        s = self.settings
        candidates = {"mlcycle_api_token": s.api_token}
        if s.store == "minio":
            candidates.update({"mlcycle_s3_access_key": s.s3_access_key, "mlcycle_s3_secret_key": s.s3_secret_key})
        return {name: secret.get_secret_value() for name, secret in candidates.items()
                if secret is not None and secret.get_secret_value()}

    def secrets_dir(self, container_name: str) -> Path:
        return Path(self.settings.run_dir).resolve() / "secrets" / container_name

    def start(self, record: Deployment, port: int) -> Backend:
        from mlcycle.tasks import images

        name = f"{CONTAINER_PREFIX}{record.id}"
        secrets = write_secret_files(self.secrets_dir(name), self._secrets(), CONTAINER_UID)
        with contextlib.closing(images.docker_client()) as client:
            container = client.containers.run(
                record.image, detach=True, name=name, network_mode="host", environment=self._environment(port),
                labels={MANAGED_LABEL: "mlcycle", DEPLOYMENT_LABEL: record.id, HOME_LABEL: home_label(self.settings)},
                restart_policy={"Name": "unless-stopped"}, init=True,
                user=f"{CONTAINER_UID}:{CONTAINER_UID}", read_only=True, tmpfs=CONTAINER_TMPFS,
                cap_drop=["ALL"], security_opt=["no-new-privileges"],
                volumes={str(secrets): {"bind": CONTAINER_SECRETS_DIR, "mode": "ro"}})
        if self.settings.store == "local":
            record.notes.append("inference log off in the container: it cannot write the host's local store "
                                "(use store: minio for containers)")
        return Backend(target="docker", port=port, container_id=container.id, container_name=name)

    def wait_ready(self, backend: Backend, timeout: float) -> float:
        import httpx

        from mlcycle.tasks import images, serving

        started = time.monotonic()
        with contextlib.closing(images.docker_client()) as client:
            container = client.containers.get(backend.container_id)
            while time.monotonic() - started < timeout:
                container.reload()
                state = container.attrs["State"]
                if state.get("Status") in ("exited", "dead") or container.attrs.get("RestartCount", 0) > 0:
                    raise NotReady(f"container {backend.container_name} ({container.image.tags or container.image.id}) "
                                   f"exited with code {state.get('ExitCode')} before it was ready "
                                   f"(restarts {container.attrs.get('RestartCount', 0)}); logs: {_logs(container)}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{backend.url}/readyz", timeout=2.0).status_code == 200:
                        return round(time.monotonic() - started, 2)
                failure = serving.startup_failure(_logs(container, 400))
                if failure:
                    raise NotReady(f"container {backend.container_name}: the service fails to start (its workers "
                                   f"exit and are restarted): {failure}")
                time.sleep(0.25)
            raise NotReady(f"container {backend.container_name} was not ready at {backend.url}/readyz within "
                           f"{timeout:.0f}s (health: {state.get('Health', {}).get('Status', 'n/a')}); "
                           f"logs: {_logs(container)}")

    def alive(self, backend: Backend) -> bool:
        from docker.errors import NotFound

        from mlcycle.tasks import images

        try:
            with contextlib.closing(images.docker_client()) as client:
                return client.containers.get(backend.container_id).status == "running"
        except (NotFound, images.ImageError):
            return False

    def stop(self, backend: Backend, grace: float) -> None:
        from docker.errors import NotFound

        from mlcycle.tasks import images

        with contextlib.closing(images.docker_client()) as client:
            try:
                container = client.containers.get(backend.container_id)
            except NotFound:
                container = None
            if container is not None:
                with contextlib.suppress(NotFound):
                    container.stop(timeout=int(grace))
                with contextlib.suppress(NotFound):
                    container.remove(force=True)
        if backend.container_name:
            shutil.rmtree(self.secrets_dir(backend.container_name), ignore_errors=True)


def write_secret_files(folder: Path, secrets: dict[str, str], uid: int) -> Path:
    """One file per secret in ``folder`` (inside a 0700 parent), each 0400 and, as root, owned by ``uid``.

    Not root (no chown): the files stay this user's, 0444 inside the 0700 folder, so the container's user
    can read them through the read-only mount while other host users cannot reach the folder.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(folder.parent, 0o700)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    can_chown = os.geteuid() == 0
    for name, value in secrets.items():
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400 if can_chown else 0o444)
        with os.fdopen(fd, "w") as out:
            out.write(value)
        if can_chown:
            os.chown(path, uid, uid)
    if can_chown:
        os.chown(folder, uid, uid)
        os.chmod(folder, 0o500)
    else:
        os.chmod(folder, 0o755)
    return folder


def home_label(settings: Settings) -> str:
    return str(Path(settings.home).resolve())


def _logs(container, lines: int = 30) -> str:
    with contextlib.suppress(Exception):
        text = container.logs(tail=lines).decode(errors="replace").strip()
        return text[-1500:] or "(empty)"
    return "(unavailable)"


def make_target(settings: Settings, name: str | None = None) -> Target:
    name = name or settings.rollout.target
    if name == "process":
        return ProcessTarget(settings)
    if name == "docker":
        return DockerTarget(settings)
    raise RolloutError(f"unknown rollout target {name!r}: expected 'process' or 'docker'")


# --------------------------------------------------------------------------------------------------
# the canary check (the same as test-serving's, against a running backend)
# --------------------------------------------------------------------------------------------------


def canary_check(store: ObjectStore, settings: Settings, url: str, model_name: str,
                 model_version: int) -> CanarySummary:
    """The test window's canaries and the latency budget, as tasks.serving.verify_serving runs them."""
    import httpx

    from mlcycle.tasks import serving
    from mlcycle.tasks.registry.versions import load_model

    cfg = settings.serving
    loaded = load_model(store, model_name, model_version)
    frame, window = serving.canary_rows(store, settings, model_name, model_version, cfg.canary_rows)
    expected = loaded.predict_proba(frame)
    threshold = cfg.threshold or loaded.metadata.threshold
    features = [c.name for c in loaded.metadata.features]
    with httpx.Client(timeout=60.0, headers=serving.api_headers(settings)) as client:
        response = client.get(f"{url}/metadata")
        if response.status_code != 200 or response.json().get("model_version") != model_version:
            raise serving.CanaryFailed(f"/metadata of the candidate at {url} does not report v{model_version}: "
                                       f"HTTP {response.status_code} {response.text[:300]}")
        canary = serving.check_canaries(url, frame, expected, settings.dataset, features, threshold,
                                        cfg.canary_tolerance, window, client=client)
        latency = serving.check_latency(url, serving.records_payload(frame, settings.dataset, features),
                                        cfg.latency_requests, cfg.latency_budget_ms, client=client)
    return CanarySummary(rows=canary.rows, max_abs_diff=max(canary.max_abs_diff_predict, canary.max_abs_diff_batch),
                         tolerance=canary.tolerance, latency_p50_ms=latency.p50_ms, latency_p95_ms=latency.p95_ms,
                         latency_budget_ms=latency.budget_ms)


CanaryFn = Callable[[ObjectStore, Settings, str, str, int], CanarySummary]


# --------------------------------------------------------------------------------------------------
# rollout and rollback
# --------------------------------------------------------------------------------------------------


def bento_labels(settings: Settings, bento_tag: str) -> dict[str, str]:
    """The labels `mlcycle package` put on a bento (model_name, model_version, ...)."""
    import yaml

    from mlcycle.tasks import serving

    path = serving.bento_dir(settings, bento_tag) / "bento.yaml"
    if not path.is_file():
        raise RolloutError(f"bento {bento_tag!r} is not in the BentoML store at {serving.bentoml_home(settings)}; "
                           "package it first (mlcycle package)")
    return {str(k): str(v) for k, v in (yaml.safe_load(path.read_text()).get("labels") or {}).items()}


def rollout(settings: Settings, store: ObjectStore, *, bento_tag: str | None = None, image: str | None = None,
            target: str | None = None, flow_run_id: str | None = None, canary: CanaryFn | None = canary_check,
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
    with deployment_lock(store, owner=f"{_kind} {record.id}"):
        current = read_current(store)
        record.previous_id = current.id if current else None
        return _attempt(settings, store, runner, record, current, canary, time.monotonic())


def _attempt(settings: Settings, store: ObjectStore, runner: Target, record: Deployment, current: Deployment | None,
             canary: CanaryFn | None, started: float) -> Deployment:
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
            record.canary = canary(store, settings, backend.url, record.model_name, int(record.model_version))
            record.timings.canary_seconds = round(time.monotonic() - t, 2)
        stage = "switch"
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
             canary: CanaryFn | None = canary_check) -> Deployment:
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


class CurrentStatus(BaseModel):
    """`mlcycle deployments current`: the live record, and whether its pieces actually run."""

    deployment: Deployment | None
    endpoint_url: str
    endpoint_running: bool
    endpoint_serves: str | None   # the deployment id nginx proxies to right now
    backend_alive: bool | None


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
    with contextlib.suppress(Exception):
        from mlcycle.tasks import images

        with contextlib.closing(images.docker_client(timeout=30)) as client:
            mine = {"label": f"{HOME_LABEL}={home_label(settings)}"}
            for container in client.containers.list(all=True, filters=mine):
                container.remove(force=True)
                shutil.rmtree(Path(settings.run_dir).resolve() / "secrets" / container.name, ignore_errors=True)
                stopped.append(container.name)
    return stopped


# --------------------------------------------------------------------------------------------------
# Prefect tasks: thin wrappers (flows/rollout.py). No retries: a failed attempt is recorded, not repeated.
# --------------------------------------------------------------------------------------------------

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402


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


def render_deployment(record: Deployment) -> str:
    """The attempt as markdown (the flow's artifact)."""
    t = record.timings
    rows = [("status", record.status if record.status != "failed" else f"FAILED at {record.failed_stage}"),
            ("model", f"{record.model_name} v{record.model_version}"), ("target", record.target),
            ("bento", f"`{record.bento_tag}`"), ("image", f"`{record.image}`" if record.image else "-"),
            ("stable endpoint", record.endpoint_url), ("backend", record.backend.url if record.backend else "-"),
            ("previous deployment", record.previous_id or "-")]
    if record.canary:
        c = record.canary
        rows.append(("canary", f"{c.rows} rows, max abs diff {c.max_abs_diff:.2g} (tolerance {c.tolerance:g}); "
                               f"p95 {c.latency_p95_ms:.1f} ms (budget {c.latency_budget_ms:.0f} ms)"))
    rows += [(name.replace("_", " "), f"{value:.2f} s") for name, value in t.model_dump().items() if value is not None]
    if record.reason:
        rows.append(("reason", record.reason))
    rows += [("note", n) for n in record.notes]
    table = "\n".join(f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows)
    return f"# {record.kind} {record.id}: {record.status}\n\n| what | value |\n|---|---|\n{table}\n"


@task(name="deployment-report", cache_policy=NO_CACHE)
def deployment_report_task(record: Deployment) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key="deployment", markdown=render_deployment(record),
                             description=record.summary()[:250])
