"""Container image test helpers: the Docker engine a test needs, serving images built once per session."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from tests.support.env import unavailable


def require_engine(settings) -> None:
    """Skip (locally) or fail (CI) when no Docker engine answers and none can be started.

    An engine a test starts here (infra/docker-engine.sh) is stopped when the session ends (the
    ``docker_engine_left_as_found`` fixture of tests/conftest.py).
    """
    from mlcycle.tasks.rollout.images import ImageError, ensure_engine

    try:
        ensure_engine(settings)
    except ImageError as exc:
        unavailable(f"no Docker engine: {exc}")


def stop_engine(pidfile: Path = Path("/var/run/docker.pid")) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)


class ServingImages:
    """The serving images of the rollout models' v1 and v2 bentos, each built on first use and again if a
    module removed it meanwhile (tests/test_rollout_docker.py cleans up the images it used)."""

    def __init__(self, models, wheelhouse: Path) -> None:
        self.models, self.wheelhouse = models, wheelhouse
        self.built: dict[str, object] = {}

    def get(self, which: str = "v1"):
        from mlcycle.tasks.rollout.images import build_serving_image, image_info
        from tests.support.rollout import rollout_settings

        image = self.built.get(which)
        if image is not None and image_info(image.tag) is not None:
            return image
        settings = rollout_settings(self.models.home, wheelhouse_dir=self.wheelhouse)
        require_engine(settings)
        bento = self.models.v1 if which == "v1" else self.models.v2
        self.built[which] = build_serving_image(settings, bento.tag)
        return self.built[which]


def never_ready_image(settings, like) -> str:
    """An image that starts and never answers /readyz (its process sleeps), labelled like ``like``."""
    import contextlib
    import io

    from mlcycle.tasks.rollout.images import docker_client, image_info, label_instruction

    tag = f"{settings.rollout.image_name}:never-ready"
    if image_info(tag) is None:
        labels = {**like.labels, "io.mlcycle.bento-tag": "none:never-ready"}
        dockerfile = (f"FROM {settings.rollout.base_image}\n{label_instruction(labels)}\n"
                      'CMD ["python3", "-c", "import time; time.sleep(3600)"]\n')
        with contextlib.closing(docker_client(timeout=1800)) as client:
            client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True,
                                network_mode="host")
    return tag
