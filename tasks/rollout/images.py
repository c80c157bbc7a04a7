"""Serving images: a bento built into a Docker image with no registry reachable.

The path of one image::

    ensure_engine ─▶ ensure_base_image ─▶ prepare_wheelhouse ─▶ build_context ─▶ docker build
    (dockerd with      (infra/base-image.sh:  (`pip wheel` on the     (bento + its models,   (infra/Dockerfile.serving,
     this machine's     debootstrap + docker   host, constrained by    wheelhouse, one        classic builder,
     recipe if none)    import, cached by tag) requirements.lock)      LABEL line)            host network)

Why not ``bentoml containerize``: its Dockerfile installs with ``apt-get`` and ``uv`` from the network
on top of ``python:3.11-slim``, none of which is reachable here. The Dockerfile here keeps the same
layout (``bento/`` with its models under ``bento/models/``, served by ``bentoml serve <dir>``) and adds
what the rollout needs: a non-root user, a HEALTHCHECK on ``/readyz``, and labels naming the bento, the
model version and the git commit.

An image is tagged ``<rollout.image_name>:<bento name>-<bento version>``; building the same bento twice
returns the existing image (bento versions are content-unique). Docker clients live only here and in
the docker target (tasks/rollout/targets.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlcycle.tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "Dockerfile.serving"
LOCK_FILE = ROOT / "requirements.lock"
LABEL_PREFIX = "io.mlcycle."
BUILD_TIMEOUT = 3600  # seconds the Docker client waits on one API call (a build streams for minutes)


class ImageError(RuntimeError):
    """The engine, the base image or the serving image is not available; the message says what to do."""


class ImageBuildError(ImageError):
    """``docker build`` failed; the message carries the failing step and the log's tail."""


class BaseImageReport(BaseModel):
    tag: str
    id: str
    built: bool  # False: found cached by tag (or pulled)
    seconds: float


class ServingImage(BaseModel):
    """A serving image: what it contains (labels) and what building it took."""

    tag: str
    id: str
    size_bytes: int
    bento_tag: str
    model_name: str
    model_version: str
    git_commit: str
    labels: dict[str, str]
    built: bool            # False: an image of this bento already existed
    build_seconds: float   # docker build only (0 when cached)
    wheelhouse_seconds: float = 0.0
    base: BaseImageReport | None = None
    log: str | None = None  # the build log on the host


# --------------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------------


def docker_client(timeout: int = 120):
    """A client of the engine named by DOCKER_HOST (default: the local socket); ImageError if none answers."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except DockerException as exc:
        raise ImageError(f"no Docker engine answers ({os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}): "
                         f"{str(exc)[:200]}") from None


def engine_available() -> bool:
    try:
        docker_client(timeout=10).close()
        return True
    except ImageError:
        return False


def ensure_engine(settings: Settings) -> str:
    """Make sure an engine answers (starting dockerd with infra/docker-engine.sh if allowed); its version."""
    try:
        client = docker_client(timeout=10)
    except ImageError as exc:
        if not settings.rollout.start_engine:
            raise ImageError(f"{exc}; start an engine (as root: infra/docker-engine.sh) or roll out with "
                             "--target process") from None
        result = subprocess.run(["bash", str(INFRA / "docker-engine.sh")], capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            raise ImageError(f"no Docker engine answers and infra/docker-engine.sh could not start one: "
                             f"{(result.stderr or result.stdout).strip()[-500:]}; roll out with --target process "
                             "instead") from None
        client = docker_client(timeout=10)
    with contextlib.closing(client):
        return client.version().get("Version", "unknown")


def ensure_base_image(settings: Settings) -> BaseImageReport:
    """The base image, cached by tag: built from Debian packages (or pulled) only when missing."""
    from docker.errors import DockerException, ImageNotFound

    tag = settings.rollout.base_image
    started = time.monotonic()
    with contextlib.closing(docker_client(timeout=BUILD_TIMEOUT)) as client:
        try:
            return BaseImageReport(tag=tag, id=client.images.get(tag).id, built=False, seconds=0.0)
        except ImageNotFound:
            pass
        if settings.rollout.build_base_image:
            env = {**os.environ, "MLCYCLE_BASE_IMAGE": tag, "DEBIAN_MIRROR": settings.rollout.debian_mirror}
            result = subprocess.run(["bash", str(INFRA / "base-image.sh"), tag], capture_output=True, text=True,
                                    env=env, timeout=1800)
            if result.returncode != 0:
                raise ImageError(f"could not build the base image {tag} with infra/base-image.sh: "
                                 f"{(result.stderr or result.stdout).strip()[-800:]}")
        else:
            try:
                client.images.pull(tag)
            except DockerException as exc:
                raise ImageError(f"base image {tag} is not present and could not be pulled ({str(exc)[:200]}); "
                                 "set rollout.build_base_image: true to build it from Debian packages") from None
        try:
            image_id = client.images.get(tag).id
        except ImageNotFound:
            raise ImageError(f"base image {tag} is still missing after building it") from None
    return BaseImageReport(tag=tag, id=image_id, built=True, seconds=round(time.monotonic() - started, 2))


# --------------------------------------------------------------------------------------------------
# names and labels
# --------------------------------------------------------------------------------------------------


def image_tag(settings: Settings, bento_tag: str) -> str:
    """``<image_name>:<bento name>-<bento version>`` (a bento tag is ``name:version``)."""
    name, _, version = str(bento_tag).partition(":")
    if not name or not version or version == "latest":
        raise ImageError(f"bento tag {bento_tag!r} must name an exact version (name:version), not a moving one")
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{name}-{version}").lower()[:128]
    return f"{settings.rollout.image_name}:{tag}"


def image_labels(bento_tag: str, model_name: str, model_version: str, git_commit: str) -> dict[str, str]:
    """The labels every serving image carries (``docker inspect`` answers what runs, from where)."""
    return {
        f"{LABEL_PREFIX}bento-tag": str(bento_tag),
        f"{LABEL_PREFIX}model-name": str(model_name),
        f"{LABEL_PREFIX}model-version": str(model_version),
        f"{LABEL_PREFIX}git-commit": str(git_commit),
        "org.opencontainers.image.revision": str(git_commit),
    }


def label_instruction(labels: dict[str, str]) -> str:
    """One LABEL instruction (with the classic builder on vfs, each instruction copies the whole image)."""
    return "LABEL " + " \\\n      ".join(f"{key}={json.dumps(str(value))}" for key, value in sorted(labels.items()))


def git_commit() -> str:
    """HEAD of the repository, with ``-dirty`` when tracked files changed."""
    from mlcycle.tasks.registry.lineage import code_version

    commit, dirty = code_version()
    return f"{commit}-dirty" if dirty else commit


def image_info(tag: str) -> dict[str, Any] | None:
    """``docker image inspect`` of ``tag`` (None if absent)."""
    from docker.errors import ImageNotFound

    with contextlib.closing(docker_client()) as client:
        try:
            return client.images.get(tag).attrs
        except ImageNotFound:
            return None


def remove_image(tag: str) -> bool:
    from docker.errors import ImageNotFound

    with contextlib.closing(docker_client()) as client:
        try:
            client.images.remove(tag, force=True)
            return True
        except ImageNotFound:
            return False


# --------------------------------------------------------------------------------------------------
# the build context
# --------------------------------------------------------------------------------------------------


def bento_dir(settings: Settings, bento_tag: str) -> Path:
    """The bento's folder in mlcycle's BentoML store (serving.bentoml_home)."""
    from mlcycle.tasks.serving.packaging import bento_dir as serving_bento_dir
    from mlcycle.tasks.serving.packaging import bentoml_home

    path = serving_bento_dir(settings, bento_tag)
    if not (path / "bento.yaml").is_file():
        raise ImageError(f"bento {bento_tag!r} is not in the BentoML store at {bentoml_home(settings)}; "
                         "build it first (mlcycle package)")
    return path


def bento_info(bento_path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((bento_path / "bento.yaml").read_text()) or {}


def bento_models(bento_path: Path) -> list[tuple[str, Path]]:
    """(model tag, folder) of every model the bento serves, from the ``models/`` store beside ``bentos/``."""
    store = bento_path.parents[2] / "models"
    info = bento_info(bento_path)
    # bento.yaml lists models at the top (spec 1) or per service (spec 2), as BentoInfo.all_models reads them
    listed = [*(info.get("models") or []), *(m for s in info.get("services") or [] for m in s.get("models") or [])]
    tags = list(dict.fromkeys(str(m["tag"] if isinstance(m, dict) else m) for m in listed))
    found = []
    for tag in tags:
        name, _, version = tag.partition(":")
        path = store / name / version
        if not (path / "model.yaml").is_file():
            raise ImageError(f"bento {bento_path.parent.name}:{bento_path.name} needs model {tag}, which is not "
                             f"in the model store {store}")
        found.append((tag, path))
    return found


def bento_model_labels(bento_path: Path) -> tuple[str, str]:
    """(model name, model version) from the bento's labels (``mlcycle package`` sets them)."""
    labels = {str(k): str(v) for k, v in (bento_info(bento_path).get("labels") or {}).items()}
    return labels.get("model_name", "unknown"), labels.get("model_version", "unknown")


def wheelhouse_root(settings: Settings) -> Path:
    return Path(settings.rollout.wheelhouse_dir or settings.home / "cache" / "wheelhouse")


def prepare_wheelhouse(settings: Settings, requirements: Path) -> tuple[Path, float]:
    """Every wheel ``requirements`` needs, built on the host; cached by the requirements' content.

    Built with this interpreter's ``pip wheel`` and constrained by ``requirements.lock``, so the image
    gets exactly the versions CI tested. The host and the base image must agree on Python (3.11) and
    platform (glibc, x86_64): both are Debian 12 here. Returns the folder and the seconds it took.
    """
    lock = LOCK_FILE.read_bytes() if LOCK_FILE.is_file() else b""
    key = hashlib.sha256(requirements.read_bytes() + b"\0" + lock + b"\0" + sys.version.encode()).hexdigest()[:16]
    root = wheelhouse_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    started = time.monotonic()
    with open(root / ".lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # two builds of the same requirements fill the folder once
        if (folder / ".complete").is_file():
            return folder, 0.0
        partial = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=root))
        argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                "--wheel-dir", str(partial), "-r", str(requirements)]
        if lock:
            argv += ["-c", str(LOCK_FILE)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise ImageBuildError(f"pip could not prepare the wheels for {requirements}: "
                                  f"{(result.stderr or result.stdout).strip()[-1200:]}")
        (partial / ".complete").write_text(dt.datetime.now(dt.UTC).isoformat())
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    return folder, round(time.monotonic() - started, 2)


def build_context(bento_path: Path, wheelhouse: Path, dest: Path, labels: dict[str, str]) -> Path:
    """Lay out the context Dockerfile.serving expects (see its header) in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Dockerfile").write_text(DOCKERFILE.read_text().rstrip("\n") + "\n" + label_instruction(labels) + "\n")
    (dest / "wheelhouse").mkdir()
    shutil.copy2(bento_path / "env" / "python" / "requirements.txt", dest / "wheelhouse" / "requirements.txt")
    for wheel in sorted(wheelhouse.glob("*.whl")):
        try:
            os.link(wheel, dest / "wheelhouse" / wheel.name)  # same file system: no copy
        except OSError:
            shutil.copy2(wheel, dest / "wheelhouse" / wheel.name)
    shutil.copytree(bento_path, dest / "bento", symlinks=False)
    models = dest / "bento" / "models"
    for tag, path in bento_models(bento_path):
        name, version = tag.split(":", 1)
        shutil.copytree(path, models / name / version, dirs_exist_ok=True)
        (models / name / "latest").write_text(version)
    return dest


# --------------------------------------------------------------------------------------------------
# the build
# --------------------------------------------------------------------------------------------------


def build_serving_image(settings: Settings, bento_tag: str, *, model_name: str | None = None,
                        model_version: str | int | None = None, force: bool = False) -> ServingImage:
    """Build (or find) the serving image of ``bento_tag``; ImageBuildError names the failing step.

    Ensures the engine and the base image first. The model name and version default to the bento's
    labels (``model_name``, ``model_version``).
    """
    from docker.errors import APIError, BuildError

    ensure_engine(settings)
    tag = image_tag(settings, bento_tag)
    bento = bento_dir(settings, bento_tag)
    found_name, found_version = bento_model_labels(bento)
    name, version = model_name or found_name, str(model_version or found_version)
    existing = image_info(tag)
    if existing and not force and (existing["Config"].get("Labels") or {}).get(f"{LABEL_PREFIX}bento-tag") == bento_tag:
        return _serving_image(existing, tag, built=False, build_seconds=0.0)
    base = ensure_base_image(settings)
    wheelhouse, wheel_seconds = prepare_wheelhouse(settings, bento / "env" / "python" / "requirements.txt")
    commit = git_commit()
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {**image_labels(bento_tag, name, version, commit), "org.opencontainers.image.created": created,
              "org.opencontainers.image.title": "mlcycle serving", "org.opencontainers.image.base.name": base.tag,
              "org.opencontainers.image.description": f"mlcycle serving: {name} v{version} (bento {bento_tag})"}
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"image-build-{tag.split(':')[-1]}.log"
    build_root = settings.home / "cache" / "build"
    build_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="context-", dir=build_root) as tmp:
        context = build_context(bento, wheelhouse, Path(tmp), labels)
        started = time.monotonic()
        with contextlib.closing(docker_client(timeout=BUILD_TIMEOUT)) as client, open(log_path, "w") as log:
            try:
                for chunk in client.api.build(path=str(context), dockerfile="Dockerfile", tag=tag,
                                              buildargs={"BASE_IMAGE": base.tag}, network_mode="host",
                                              rm=True, forcerm=True, pull=False, decode=True):
                    if "stream" in chunk:
                        log.write(chunk["stream"])
                        log.flush()
                    elif "error" in chunk:
                        log.write(chunk["error"] + "\n")
                        log.flush()
                        raise BuildError(chunk["error"], [])
            except (BuildError, APIError) as exc:
                log.flush()
                tail = log_path.read_text(errors="replace")[-1500:]
                raise ImageBuildError(f"docker build of {tag} from bento {bento_tag} failed: {exc}; "
                                      f"log {log_path}:\n{tail}") from None
        seconds = round(time.monotonic() - started, 2)
    built = image_info(tag)
    if built is None:
        raise ImageBuildError(f"docker build reported success but image {tag} is missing; log {log_path}")
    image = _serving_image(built, tag, built=True, build_seconds=seconds)
    return image.model_copy(update={"wheelhouse_seconds": wheel_seconds, "base": base, "log": str(log_path)})


def _serving_image(attrs: dict[str, Any], tag: str, *, built: bool, build_seconds: float) -> ServingImage:
    labels = attrs["Config"].get("Labels") or {}
    return ServingImage(
        tag=tag, id=attrs["Id"], size_bytes=int(attrs.get("Size", 0)),
        bento_tag=labels.get(f"{LABEL_PREFIX}bento-tag", "unknown"),
        model_name=labels.get(f"{LABEL_PREFIX}model-name", "unknown"),
        model_version=labels.get(f"{LABEL_PREFIX}model-version", "unknown"),
        git_commit=labels.get(f"{LABEL_PREFIX}git-commit", "unknown"),
        labels=labels, built=built, build_seconds=build_seconds,
    )
