"""Rollout on the ``docker`` target, with the real engine: images built once per session (the
``serving_images`` fixture of tests/conftest.py).

The same scenario as tests/test_rollout.py, in containers: v1 goes live, v2 replaces it while a client
sends requests through the stable URL, an image that never becomes ready and a build that cannot run
both leave v2 serving with the failed attempts recorded, rollback returns to v1. Each test brings the
home to the state it starts from (``scenario.serving``): any one passes alone and in any order.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest

from tests.support.endpoint import NEEDS_NGINX
from tests.support.images import never_ready_image, require_engine
from tests.support.rollout import Scenario, clone_home, predict, traffic

pytestmark = [pytest.mark.slow, NEEDS_NGINX]


@pytest.fixture(scope="module")
def scenario(rollout_models, serving_images, tmp_path_factory):
    settings = clone_home(rollout_models, tmp_path_factory.mktemp("docker") / "home",
                          wheelhouse_dir=serving_images.wheelhouse)
    require_engine(settings)
    s = Scenario(settings, rollout_models, "docker")
    s.images = {"v1": serving_images.get("v1"), "v2": serving_images.get("v2")}
    yield s
    s.teardown()
    from mlcycle.tasks.rollout.images import remove_image

    for image in s.images.values():  # bento versions change with the code: do not pile them up
        if image.built:                       # (the virtualenv layers stay cached for the next build)
            remove_image(image.tag)


def container(record):
    from mlcycle.tasks.rollout.images import docker_client

    with contextlib.closing(docker_client()) as client:
        return client.containers.get(record.backend.container_id)


def test_first_docker_rollout_serves_v1_from_its_image(scenario):
    from mlcycle.tasks.rollout.orchestrate import read_current

    image = scenario.images["v1"]
    before = scenario.current()
    if before is not None and before.model_version == "1":
        before = scenario.serving("2")
    record = scenario.rollout(scenario.models.v1.tag)
    assert record.status == "live" and record.target == "docker" and record.model_version == "1"
    assert record.previous_id == (before.id if before else None)
    assert record.image == image.tag and record.image_id == image.id and record.timings.build_seconds == 0.0
    answer = predict(scenario.url, scenario.models.request)
    assert answer["model_version"] == 1 and answer["deployment"] == record.id
    assert read_current(scenario.store).image == image.tag
    running = container(record)
    assert running.attrs["HostConfig"]["NetworkMode"] == "host" and running.attrs["Config"]["User"] == "10001:10001"
    assert running.labels["io.mlcycle.deployment-id"] == record.id
    deadline = time.monotonic() + 60  # Docker's own HEALTHCHECK (/readyz every 5 s) agrees
    while running.attrs["State"].get("Health", {}).get("Status") != "healthy" and time.monotonic() < deadline:
        time.sleep(1)
        running.reload()
    assert running.attrs["State"]["Health"]["Status"] == "healthy"


def test_v2_container_replaces_v1_under_continuous_traffic_without_a_failed_request(scenario):
    from docker.errors import NotFound

    from mlcycle.tasks.rollout.orchestrate import find, read_current

    v1 = scenario.serving("1")
    record, _ = scenario.roll_v2_under_traffic()
    assert record.image == scenario.images["v2"].tag and record.previous_id == v1.id
    assert read_current(scenario.store).id == record.id
    assert find(scenario.store, v1.id).status == "retired"
    with pytest.raises(NotFound):
        container(v1)  # stopped and removed after the drain


def test_an_image_that_never_becomes_ready_leaves_v2_serving_and_is_recorded(scenario):
    from mlcycle.tasks.rollout.orchestrate import RolloutFailed, read_current, rollout

    v2 = scenario.serving("2")
    image = never_ready_image(scenario.settings, scenario.images["v1"])
    impatient = scenario.settings.model_copy(update={"rollout": scenario.settings.rollout.model_copy(
        update={"readiness_timeout_seconds": 15})})
    with traffic(scenario.url, scenario.models.request) as client, pytest.raises(RolloutFailed) as failed:
        rollout(impatient, scenario.store, image=image, target="docker")
    assert client.failures == [] and set(client.versions) == {2}
    record = failed.value.record
    assert record.status == "failed" and record.failed_stage == "ready" and "within 15s" in record.reason
    assert record.image == image
    assert read_current(scenario.store).id == v2.id
    from docker.errors import NotFound

    with pytest.raises(NotFound):
        container(record)  # the failed candidate is removed


def test_an_image_that_cannot_be_built_leaves_v2_serving_and_is_recorded(scenario):
    from mlcycle.tasks.rollout.orchestrate import RolloutFailed, history, read_current, rollout

    unbuildable = scenario.settings.model_copy(update={"rollout": scenario.settings.rollout.model_copy(update={
        "image_name": "mlcycle-serving-unbuildable", "base_image": "local/no-such-base:1", "build_base_image": False})})
    v2 = scenario.serving("2")
    with pytest.raises(RolloutFailed, match="could not be pulled") as failed:
        rollout(unbuildable, scenario.store, bento_tag=scenario.models.v1.tag, target="docker")
    assert failed.value.record.failed_stage == "build" and failed.value.record.backend is None
    assert history(scenario.store, limit=1)[0].failed_stage == "build"
    assert read_current(scenario.store).id == v2.id
    assert predict(scenario.url, scenario.models.request)["model_version"] == 2


def test_rollback_starts_the_v1_image_again_and_switches_without_a_failed_request(scenario):
    from mlcycle.tasks.rollout.orchestrate import current_status

    v2 = scenario.serving("2")
    back = scenario.roll_back_under_traffic()
    assert back.kind == "rollback" and back.rollback_of == v2.id and back.image == scenario.images["v1"].tag
    status = current_status(scenario.settings, scenario.store)
    assert status.deployment.id == back.id and status.backend_alive and status.endpoint_serves == back.id


def test_the_container_is_locked_down_and_reads_its_secrets_from_files_not_its_environment(scenario, s3_running):
    """Read-only root file system, no capabilities, non-root; S3 keys and the API token only as files.

    With store: minio (moto's S3 server on 127.0.0.1, reached over the host network) the container also
    writes its inference log, so "still serves and logs inference" is checked end to end.
    """
    import datetime as dt
    import os
    import stat

    import httpx
    from pydantic import SecretStr

    from mlcycle.tasks.inference_reader import read_inference_log
    from mlcycle.tasks.records.rollout import Deployment
    from mlcycle.tasks.rollout.targets import CONTAINER_UID, DockerTarget
    from mlcycle.tasks.serving.process import free_port
    from mlcycle.tasks.storage import open_store
    from tests.support.env import S3_ACCESS_KEY, S3_SECRET_KEY, minio_overrides

    token = "tok-docker-secret-file-5c7e"  # noqa: S105 - a test value
    base = scenario.settings
    serving = base.serving.model_copy(update={"inference_log": base.serving.inference_log.model_copy(
        update={"flush_interval_seconds": 1.0})})
    settings = base.model_copy(update={**minio_overrides(s3_running), "api_token": SecretStr(token),
                                       "serving": serving})
    store = open_store(settings)
    target = DockerTarget(settings)
    record = Deployment(id="lockeddown", target="docker", image=scenario.images["v1"].tag,
                        endpoint_url="-", requested_at=dt.datetime.now(dt.UTC))
    backend = target.start(record, free_port())
    secrets = target.secrets_dir(backend.container_name)
    try:
        target.wait_ready(backend, 120)
        running = container(record.model_copy(update={"backend": backend}))
        attrs = running.attrs
        environment = "\n".join(attrs["Config"]["Env"])
        for secret in (token, S3_ACCESS_KEY, S3_SECRET_KEY):
            assert secret not in environment and secret not in json.dumps(attrs)
        host = attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host["SecurityOpt"] and set(host["Tmpfs"]) == {
            "/tmp", "/home/mlcycle/bentoml", "/home/mlcycle/data"}  # scratch only: spills are on a volume
        (mount,) = [m for m in attrs["Mounts"] if m["Destination"] == "/run/secrets"]
        assert mount["RW"] is False and Path(mount["Source"]) == secrets
        assert sorted(p.name for p in secrets.iterdir()) == ["mlcycle_api_token", "mlcycle_s3_access_key",
                                                           "mlcycle_s3_secret_key"]
        for path in secrets.iterdir():
            info = path.stat()
            assert stat.S_IMODE(info.st_mode) == 0o400 and (os.geteuid() != 0 or info.st_uid == CONTAINER_UID)

        code, out = running.exec_run(["sh", "-c", "id -u; touch /home/mlcycle/x || exit 3"])
        assert code == 3 and b"Read-only file system" in out and out.split()[0] == str(CONTAINER_UID).encode()
        for path in ("/home/mlcycle/bento/x", "/run/secrets/x", "/opt/venv/x"):
            assert running.exec_run(["touch", path])[0] != 0, path
        assert running.exec_run(["touch", "/tmp/x"])[0] == 0  # tmpfs, where writing is needed

        url = backend.url
        assert httpx.post(f"{url}/predict", json=scenario.models.request, timeout=30).status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        ids = []
        for _ in range(3):
            response = httpx.post(f"{url}/predict", json=scenario.models.request, headers=headers, timeout=30)
            assert response.status_code == 200, response.text
            ids.append(response.json()["request_id"])
        deadline = time.monotonic() + 60  # the log flushes every second, to the bucket over S3
        logged = read_inference_log(store)
        while not set(ids) <= set(logged.get("request_id", [])) and time.monotonic() < deadline:
            time.sleep(1)
            logged = read_inference_log(store)
        assert set(ids) <= set(logged.get("request_id", [])), "the container's predictions never reached the log"

        # spills live on a host volume, not tmpfs: a part a store outage left there survives a restart of the
        # container, and the restarted service uploads it
        (spill_mount,) = [m for m in attrs["Mounts"] if m["Destination"] == "/home/mlcycle/spill"]
        assert spill_mount["RW"] is True and Path(spill_mount["Source"]) == target.spill_dir()
        logged_key = next(k for k in store.list("inference/") if k.endswith(".parquet"))
        spilled_key = "inference/date=2020-01-01/" + logged_key.rsplit("/", 1)[1]
        spilled = target.spill_dir() / spilled_key
        spilled.parent.mkdir(parents=True, exist_ok=True)
        spilled.write_bytes(store.get_bytes(logged_key))
        if os.geteuid() == 0:
            for path in (spilled.parent.parent, spilled.parent, spilled):
                os.chown(path, CONTAINER_UID, CONTAINER_UID)
        running.restart(timeout=10)
        deadline = time.monotonic() + 90
        while not store.exists(spilled_key) and time.monotonic() < deadline:
            time.sleep(1)
        assert store.exists(spilled_key), "the restarted container did not upload the part left on its volume"
        assert store.get_bytes(spilled_key) == store.get_bytes(logged_key) and not spilled.exists()
        logs = running.logs().decode(errors="replace")
        assert token not in logs and S3_SECRET_KEY not in logs
    finally:
        target.stop(backend, grace=10)
    assert not secrets.exists()  # the secret files go with the container


def test_teardown_removes_the_containers_of_this_home(scenario):
    from mlcycle.tasks.rollout.images import docker_client
    from mlcycle.tasks.rollout.targets import HOME_LABEL, home_label

    scenario.teardown()
    with contextlib.closing(docker_client()) as client:
        left = client.containers.list(all=True, filters={"label": f"{HOME_LABEL}={home_label(scenario.settings)}"})
    assert left == []
