"""Where a deployment runs: one small protocol (:class:`Target`) and its two implementations.

* ``process`` -- a local ``bentoml serve`` process (tasks/serving/process.py: start_serving), registered
  as a stack service (pid file under ``<home>/run/``) so ``mlcycle down`` stops it; the embedded default.
* ``docker``  -- a container of the serving image (tasks/rollout/images.py), host networking, started
  through the Docker Engine API (``docker`` SDK); it survives the CLI and restarts with the engine.
  Its secrets are files, never environment variables (:func:`write_secret_files`).

A target starts a candidate without waiting, then waits for its readiness on its own terms (a process's
log, a container's state); tasks/rollout/orchestrate.py drives both the same way. :class:`RolloutError`
(the rollout cannot run at all) and :class:`NotReady` are raised here and by the orchestration.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Protocol

import psutil

from mlcycle.tasks import stack
from mlcycle.tasks.records.rollout import Backend, Deployment, TargetName
from mlcycle.tasks.rollout import images
from mlcycle.tasks.serving.process import ServeFailed, ServeProcess, start_serving, startup_failure, wait_ready
from mlcycle.tasks.settings import Settings

CONTAINER_PREFIX = "mlcycle-serving-"
CONTAINER_UID = 10001  # the serving image's user (infra/Dockerfile.serving)
CONTAINER_HOME = "/home/mlcycle/data"  # MLCYCLE_HOME in the container (inference-log spills)
CONTAINER_SECRETS_DIR = "/run/secrets"
CONTAINER_SPILL_DIR = "/home/mlcycle/spill"  # inference-log parts kept while the store is down: a host volume
# the only writable places of a serving container (its root file system is read-only)
CONTAINER_TMPFS = {"/tmp": "rw,nosuid,nodev,size=64m", "/home/mlcycle/bentoml": "rw,nosuid,nodev,size=64m",
                   CONTAINER_HOME: "rw,nosuid,nodev,size=256m"}
MANAGED_LABEL = "io.mlcycle.managed-by"
DEPLOYMENT_LABEL = "io.mlcycle.deployment-id"
HOME_LABEL = "io.mlcycle.home"  # containers of one MLCYCLE_HOME (teardown stops only those)


class RolloutError(RuntimeError):
    """Rollout could not run at all (nothing to roll back to, a rollout in progress, bad input)."""


class NotReady(RuntimeError):
    """The candidate did not become ready (exited, crash loop, timeout); the message has its log tail."""


class Target(Protocol):
    """Where a deployment runs. ``prepare`` may build; ``start`` must not block on readiness."""

    name: TargetName

    def prepare(self, record: Deployment) -> None: ...
    def start(self, record: Deployment, port: int) -> Backend: ...
    def wait_ready(self, backend: Backend, timeout: float) -> float: ...
    def alive(self, backend: Backend) -> bool: ...
    def stop(self, backend: Backend, grace: float) -> None: ...


def make_target(settings: Settings, name: str | None = None) -> Target:
    name = name or settings.rollout.target
    if name == "process":
        return ProcessTarget(settings)
    if name == "docker":
        return DockerTarget(settings)
    raise RolloutError(f"unknown rollout target {name!r}: expected 'process' or 'docker'")


# --------------------------------------------------------------------------------------------------
# process
# --------------------------------------------------------------------------------------------------


def rolled_out(settings: Settings) -> Settings:
    """The settings a rolled-out backend serves with: ``rollout.workers`` serving workers, so that the endpoint
    retries a killed worker's requests on another one (tasks/rollout/endpoint.py)."""
    serving = settings.serving.model_copy(update={"workers": settings.rollout.workers})
    return settings.model_copy(update={"serving": serving})


class ProcessTarget:
    """``bentoml serve <bento>`` on the host, in its own process group, registered as a stack service."""

    name: TargetName = "process"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._running: dict[int, ServeProcess] = {}  # port -> the `bentoml serve` started here

    def prepare(self, record: Deployment) -> None:
        if not record.bento_tag:
            raise RolloutError("the process target needs a bento tag")

    def start(self, record: Deployment, port: int) -> Backend:
        service = f"serving-{record.id}"
        log = self.settings.run_dir / f"{service}.log"
        process = start_serving(rolled_out(self.settings), record.bento_tag, port=port, log_path=log)
        self._running[port] = process
        # The same pid-file format as tasks.stack, so `mlcycle down` / `mlcycle status` see the backend.
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        (self.settings.run_dir / f"{service}.json").write_text(json.dumps(
            {"name": service, "pid": process.pid, "url": process.url, "log": str(log)}))
        return Backend(target="process", port=port, pid=process.pid, service=service, log=str(log))

    def wait_ready(self, backend: Backend, timeout: float) -> float:
        process = self._running.get(backend.port)
        if process is None:
            raise NotReady(f"no process of this rollout listens on port {backend.port}")
        try:
            return wait_ready(process, timeout)
        except ServeFailed as exc:
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
    """SIGTERM a `bentoml serve` started by another process (its group, then its workers), KILL after ``grace``.

    BentoML's arbiter starts each worker in a process group of its own: the workers are collected before
    the signal and killed too if any is left once the arbiter is gone.
    """
    try:
        arbiter = psutil.Process(pid)
        children = arbiter.children(recursive=True)
    except psutil.Error:
        arbiter, children = None, []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    if arbiter is not None and not exited(arbiter, grace):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


def exited(process, timeout: float) -> bool:
    """Whether the ``psutil.Process`` exits within ``timeout`` (reaped if it is this process's child; a
    zombie whose parent has not reaped it yet has exited too)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            process.wait(timeout=0.1)
            return True
        except psutil.TimeoutExpired:
            pass
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False


# --------------------------------------------------------------------------------------------------
# docker
# --------------------------------------------------------------------------------------------------


class DockerTarget:
    """A container of the serving image, host networking, restarted by the engine unless stopped.

    Locked down: non-root (the image's uid 10001), a read-only root file system with tmpfs only where
    the service writes scratch (/tmp, BentoML's home for its metrics files, MLCYCLE_HOME), and one host
    volume for inference-log spills (:meth:`spill_dir`: they must survive a restart), no capabilities,
    no-new-privileges. Secrets (S3 keys, the API token) are never container
    environment variables, which ``docker inspect`` shows to anyone with engine access: they are files
    (0400, owned by the container's user) in a folder per container under ``<home>/run/secrets/`` (0700),
    mounted read-only at /run/secrets, where the service's settings read them (tasks.settings). The
    folder is removed with the container.
    """

    name: TargetName = "docker"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def prepare(self, record: Deployment) -> None:
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
        s = rolled_out(self.settings)
        serving = s.serving.model_copy(deep=True)
        serving.bentoml_home = None
        serving.inference_log.spill_dir = Path(CONTAINER_SPILL_DIR)
        if s.store == "local":
            serving.inference_log.enabled = False
        env = {"BENTOML_PORT": str(port), "BENTOML_HOST": "127.0.0.1", "MLCYCLE_HOME": CONTAINER_HOME,
               "MLCYCLE_STORE": s.store, "MLCYCLE_STORE_PREFIX": s.store_scope,
               "MLCYCLE_SERVING": serving.model_dump_json(), "MLCYCLE_SECRETS_DIR": CONTAINER_SECRETS_DIR}
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

    def spill_dir(self) -> Path:
        """The host folder every serving container of this home spills its inference log into (mounted at
        CONTAINER_SPILL_DIR): parts spilled during a store outage survive a container restart or replacement,
        and whichever container starts next uploads them (the writer re-uploads what it finds there)."""
        return Path(self.settings.run_dir).resolve() / "spill" / "serving"

    def start(self, record: Deployment, port: int) -> Backend:
        name = f"{CONTAINER_PREFIX}{record.id}"
        secrets = write_secret_files(self.secrets_dir(name), self._secrets(), CONTAINER_UID)
        spill = shared_folder(self.spill_dir(), CONTAINER_UID)
        with contextlib.closing(images.docker_client()) as client:
            container = client.containers.run(
                record.image, detach=True, name=name, network_mode="host", environment=self._environment(port),
                labels={MANAGED_LABEL: "mlcycle", DEPLOYMENT_LABEL: record.id, HOME_LABEL: home_label(self.settings)},
                restart_policy={"Name": "unless-stopped"}, init=True,
                user=f"{CONTAINER_UID}:{CONTAINER_UID}", read_only=True, tmpfs=CONTAINER_TMPFS,
                cap_drop=["ALL"], security_opt=["no-new-privileges"],
                volumes={str(secrets): {"bind": CONTAINER_SECRETS_DIR, "mode": "ro"},
                         str(spill): {"bind": CONTAINER_SPILL_DIR, "mode": "rw"}})
        if self.settings.store == "local":
            record.notes.append("inference log off in the container: it cannot write the host's local store "
                                "(use store: minio for containers)")
        return Backend(target="docker", port=port, container_id=container.id, container_name=name)

    def wait_ready(self, backend: Backend, timeout: float) -> float:
        import httpx

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
                failure = startup_failure(_logs(container, 400))
                if failure:
                    raise NotReady(f"container {backend.container_name}: the service fails to start (its workers "
                                   f"exit and are restarted): {failure}")
                time.sleep(0.25)
            raise NotReady(f"container {backend.container_name} was not ready at {backend.url}/readyz within "
                           f"{timeout:.0f}s (health: {state.get('Health', {}).get('Status', 'n/a')}); "
                           f"logs: {_logs(container)}")

    def alive(self, backend: Backend) -> bool:
        from docker.errors import NotFound

        try:
            with contextlib.closing(images.docker_client()) as client:
                return client.containers.get(backend.container_id).status == "running"
        except (NotFound, images.ImageError):
            return False

    def stop(self, backend: Backend, grace: float) -> None:
        from docker.errors import NotFound

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


def shared_folder(folder: Path, uid: int) -> Path:
    """A folder the container's user writes, inside a 0700 parent (other host users cannot reach it): owned by
    ``uid`` as root; otherwise 0777 (the parent still shuts everyone else out)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(folder.parent, 0o700)
    folder.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        os.chown(folder, uid, uid)
        os.chmod(folder, 0o700)
    else:
        os.chmod(folder, 0o777)
    return folder


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
