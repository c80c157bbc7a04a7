"""Serving images, built with the real engine and no registry: base image cached by tag, the image of a
real bento (non-root, HEALTHCHECK on /readyz, labels), its tag derived from the bento tag.

Docker tests run wherever an engine answers or can be started (root + docker.io: infra/docker-engine.sh).
With ``REQUIRE_DOCKER_TESTS=1`` (set by .ci/run) a missing engine FAILS them instead of skipping: CI
never silently skips the container tests.
"""

from __future__ import annotations

import contextlib

import pytest

from tests.support.images import require_engine

# --------------------------------------------------------------------------------------------------
# names (no engine)
# --------------------------------------------------------------------------------------------------


def test_the_image_tag_is_derived_from_the_bento_tag(settings):
    from mlcycle.tasks.rollout.images import image_tag

    assert image_tag(settings, "mlcycle-model:v3-0a1b2c3d4e5f") == "mlcycle-serving:mlcycle-model-v3-0a1b2c3d4e5f"


def test_a_moving_bento_tag_is_refused(settings):
    from mlcycle.tasks.rollout.images import ImageError, image_tag

    for tag in ("mlcycle-model:latest", "mlcycle-model"):
        with pytest.raises(ImageError, match="exact version"):
            image_tag(settings, tag)


def test_labels_are_one_instruction_with_quoted_values():
    from mlcycle.tasks.rollout.images import image_labels, label_instruction

    line = label_instruction(image_labels("m:v1-x", "loans", "1", 'abc"def'))
    assert line.startswith("LABEL ") and line.count("LABEL") == 1
    assert 'io.mlcycle.git-commit="abc\\"def"' in line and 'io.mlcycle.model-version="1"' in line


# --------------------------------------------------------------------------------------------------
# with the engine
# --------------------------------------------------------------------------------------------------


def test_the_base_image_is_built_once_and_then_found_by_tag(settings):
    from mlcycle.tasks.rollout.images import ensure_base_image, image_info

    require_engine(settings)
    first = ensure_base_image(settings)  # builds it on a fresh machine (debootstrap), else finds it
    again = ensure_base_image(settings)
    assert again.built is False and again.seconds == 0.0 and again.id == first.id
    config = image_info(settings.rollout.base_image)["Config"]
    assert config["Labels"]["org.opencontainers.image.title"] == "mlcycle-python-base"


@pytest.mark.slow
def test_the_serving_image_runs_as_non_root_with_a_readiness_healthcheck_and_labels(serving_images, rollout_models):
    from mlcycle.tasks.rollout.images import image_info

    image = serving_images.get("v1")
    models = rollout_models
    assert image.tag == f"mlcycle-serving:mlcycle-model-{models.v1.tag.split(':')[1]}"
    assert image.bento_tag == models.v1.tag and image.model_name == models.v1.model_name
    assert image.model_version == "1" and len(image.git_commit) >= 40
    config = image_info(image.tag)["Config"]
    assert config["User"] == "10001:10001"
    assert "/readyz" in " ".join(config["Healthcheck"]["Test"])
    assert config["Cmd"] == ["bentoml", "serve", "/home/mlcycle/bento"]
    assert config["Labels"]["org.opencontainers.image.revision"] == image.git_commit


@pytest.mark.slow
def test_the_image_holds_the_bento_and_its_model_and_builds_no_twice(serving_images, rollout_models):

    from mlcycle.tasks.rollout.images import build_serving_image, docker_client
    from tests.support.rollout import rollout_settings

    image = serving_images.get("v1")
    models = rollout_models
    name, version = models.v1.model_tag.split(":")
    script = (f"id -u; ls /home/mlcycle/bento/models/{name}/{version}; "
              "python -c 'import sklearn, bentoml; print(bentoml.__version__)'")
    with contextlib.closing(docker_client()) as client:
        listing = client.containers.run(image.tag, ["sh", "-c", script], network_mode="host", remove=True).decode()
    assert listing.split()[0] == "10001"
    assert "model.joblib" in listing and "served_model.json" in listing and "1.4.39" in listing
    settings = rollout_settings(models.home, wheelhouse_dir=serving_images.wheelhouse)
    again = build_serving_image(settings, models.v1.tag)
    assert again.built is False and again.id == image.id
