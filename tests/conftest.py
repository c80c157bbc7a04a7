"""Shared fixtures: settings on a temp home, both store backends, a real S3 server, one Prefect harness.

* ``settings`` -- settings from the repo's mlcycle.yaml with ``home`` in a temp dir (local store).
* ``store`` -- parametrized over ``local`` and ``minio``; the MinIO backend talks HTTP to moto's S3
  server on 127.0.0.1 (a fresh bucket per test), so the same test runs against both.
* ``s3_server`` -- that moto server (session-scoped), restartable on the same port for outage tests.
* ``prefect_harness`` -- ONE session-scoped ``prefect_test_harness`` (it costs ~15 s to start).
* ``env_settings`` -- sets MLCYCLE_* for code that reads ``get_settings()`` (flows, CLI).
"""

from __future__ import annotations

import os

import pytest

from tests.support.env import ROOT, S3Server, make_settings, minio_overrides

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["MLCYCLE_CONFIG"] = str(ROOT / "mlcycle.yaml")
for _key in [k for k in os.environ if k.startswith("MLCYCLE_") and k != "MLCYCLE_CONFIG"]:
    del os.environ[_key]


def _prefect_logging_set_up_now() -> None:
    """Prefect sets its logging up once, on first use, its console handlers bound to the sys.stderr of that
    moment. Set up first inside a test that captures with capsys, they would keep that test's stream, closed
    when it ends, and every later Prefect log line of the session fails ("I/O operation on closed file",
    then a RecursionError: tests/test_cli.py before tests/test_secrets.py). Set up here, at collection and
    after the environment above, they hold the session's stream whatever order the modules run in."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()


_prefect_logging_set_up_now()


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_running(s3_server):
    """The S3 server, guaranteed up at the start of the test (outage tests stop it)."""
    if not s3_server.running:
        s3_server.start()
    yield s3_server
    if not s3_server.running:
        s3_server.start()


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "home")


@pytest.fixture(params=["local", "minio"])
def backend_settings(request, tmp_path):
    """Settings for each store backend (the same test runs against both)."""
    if request.param == "local":
        return make_settings(tmp_path / "home")
    server = request.getfixturevalue("s3_running")
    return make_settings(tmp_path / "home", **minio_overrides(server))


@pytest.fixture
def store(backend_settings):
    from mlcycle.tasks.storage import open_store

    return open_store(backend_settings)


@pytest.fixture
def env_settings(monkeypatch, tmp_path):
    """Point get_settings() (flows, CLI) at a temp home; returns a function to add MLCYCLE_* overrides."""
    from mlcycle.tasks.settings import get_settings

    def apply(**env: str):
        monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path / "home"))
        for key, value in env.items():
            monkeypatch.setenv(f"MLCYCLE_{key.upper()}", str(value))
        get_settings.cache_clear()
        return get_settings()

    yield apply
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def validated_template(tmp_path_factory):
    """Validated partitions written once per module, copied into each training test's home."""
    from tests.support.training import make_validated_template

    return make_validated_template(tmp_path_factory.mktemp("validated"))


@pytest.fixture
def train_env(tmp_path, validated_template):
    from tests.support.training import copy_train_env

    return copy_train_env(tmp_path, validated_template)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def packaged_champion(tmp_path_factory):
    """The demo's champion, trained, promoted and packaged into a bento once per session
    (tests/support/champion.py)."""
    from tests.support.champion import package_champion

    return package_champion(tmp_path_factory.mktemp("serving-champion"))


@pytest.fixture(scope="session")
def served_tables(tmp_path_factory):
    """The real tables' packaged models, each built on first use (tests/support/serving.py)."""
    from tests.support.serving import ServedTables

    return ServedTables(tmp_path_factory)


@pytest.fixture(scope="session")
def rollout_models(tmp_path_factory):
    """Two registered, packaged model versions and a broken bento, built once per session
    (tests/support/rollout.py)."""
    from tests.support.rollout import build_rollout_models

    return build_rollout_models(tmp_path_factory.mktemp("rollout-models"))


@pytest.fixture(scope="session")
def serving_images(rollout_models, tmp_path_factory):
    """The rollout models' serving images, each built on first use (tests/support/images.py)."""
    from tests.support.images import ServingImages

    return ServingImages(rollout_models, tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture(scope="session", autouse=True)
def docker_engine_left_as_found():
    """A Docker engine a test started (tests/support/images.py:require_engine) is stopped when the session
    ends; one that was running before is left running."""
    from mlcycle.tasks.rollout.images import engine_available
    from tests.support.images import stop_engine

    was_running = engine_available()
    yield
    if not was_running and engine_available():
        stop_engine()
