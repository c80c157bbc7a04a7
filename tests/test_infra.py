"""Deployment files that must not drift from the code.

* ``infra/docker-compose.yml`` is rendered by the real compose CLI (``docker compose`` or Debian's
  docker-compose 1.29) with a sample env file: the file is valid, every service is wired to the others by
  name, a missing secret is refused naming it, and every ``MLCYCLE_*`` / ``PREFECT_*`` variable it sets is
  one that mlcycle's settings model (tasks/settings/) or Prefect's actually reads -- pydantic-settings
  and Prefect silently ignore unknown variables, so a renamed setting would otherwise go unnoticed.
* ``infra/k8s/`` is validated with kubernetes-validate (bundled schemas, offline) in strict mode against
  Kubernetes ``K8S_VERSION``, and the serving Deployment's contract is asserted (rolling update without
  losing capacity, probes on /readyz and /livez, the port of ``serving.port``, secrets by reference).
* The serving pod's security context is run for real: the serving image started the way the
  Deployment runs it (non-root, read-only root file system, only its emptyDir paths writable, all
  capabilities dropped), with the ConfigMap's and Secret's variables pointed at the S3 server of the
  tests, answers /readyz and /predict and writes its inference log to the bucket.

Compose and Docker tests skip on a machine without the CLI or an engine and FAIL with
``REQUIRE_DOCKER_TESTS=1`` (set by .ci/run, which installs docker.io and docker-compose).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import typing
import uuid
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from tests.support.env import ROOT, S3_ACCESS_KEY, S3_SECRET_KEY, free_port, unavailable

INFRA = ROOT / "infra"
COMPOSE_FILE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / "compose.env.example"
FLOWS_DOCKERFILE = INFRA / "Dockerfile.flows"
K8S_DIR = INFRA / "k8s"
K8S_VERSION = "1.33"  # the oldest Kubernetes release the manifests promise to apply to

# A complete env file for the compose file (throwaway values; real ones live in infra/.env, not in git).
SAMPLE_ENV = {
    "MINIO_ROOT_USER": "mlcycle-admin",
    "MINIO_ROOT_PASSWORD": "sample-minio-password-5c1e",
    "POSTGRES_PASSWORD": "samplepostgrespassword7d2a",
    "PREFECT_AUTH_STRING": "admin:sample-prefect-password-0b9f",
    "MLCYCLE_SERVING_IMAGE": "mlcycle-serving:mlcycle-model-v1-0123456789ab",
}
SERVICES = {"minio", "postgres", "prefect-server", "deploy", "worker", "serving"}


# --------------------------------------------------------------------------------------------------
# settings drift: which variables mlcycle and Prefect really read
# --------------------------------------------------------------------------------------------------


def _nested_model(annotation: typing.Any) -> type[BaseModel] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def settings_field(variable: str) -> str | None:
    """The settings field an ``MLCYCLE_*`` variable sets (``serving.port`` for ``MLCYCLE_SERVING__PORT``),
    or None when mlcycle's settings model has no such field."""
    from mlcycle.tasks.settings import Settings

    parts = variable.removeprefix("MLCYCLE_").lower().split("__")
    model: type[BaseModel] | None = Settings
    for i, part in enumerate(parts):
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        model = _nested_model(field.annotation) if i < len(parts) - 1 else None
        if i < len(parts) - 1 and model is None:
            return None
    return ".".join(parts)


def mlcycle_variables_outside_settings() -> set[str]:
    """MLCYCLE_* variables mlcycle reads that are not settings fields (the config file, stack ports)."""
    from mlcycle.tasks import settings, stack

    names = {settings.CONFIG_ENV, stack.PREFECT_PORT_ENV, stack.WORKER_PORT_ENV}
    return names | ({settings.SECRETS_DIR_ENV} if hasattr(settings, "SECRETS_DIR_ENV") else set())


def unknown_variables(env: dict[str, typing.Any]) -> list[str]:
    """The MLCYCLE_* and PREFECT_* names in ``env`` that neither mlcycle nor Prefect reads."""
    from prefect.settings import Settings as PrefectSettings

    # (a private helper, but the one Prefect itself uses to list its variables; prefect is pinned)
    from prefect.settings.legacy import _get_valid_setting_names

    prefect_names = _get_valid_setting_names(PrefectSettings)
    outside = mlcycle_variables_outside_settings()

    def known(name: str) -> bool:
        if name.startswith("MLCYCLE_"):
            return name in outside or settings_field(name) is not None
        return not name.startswith("PREFECT_") or name in prefect_names

    return [name for name in env if not known(name)]


def settings_from(env: dict[str, typing.Any], monkeypatch):
    """mlcycle's settings as a process with ``env`` (and the repo's mlcycle.yaml) would load them."""
    from mlcycle.tasks.settings import load_settings

    for name, value in env.items():
        if name.startswith("MLCYCLE_") and value is not None:
            monkeypatch.setenv(name, str(value))
    return load_settings()


def test_settings_field_maps_variables_to_the_settings_model():
    assert settings_field("MLCYCLE_S3_ENDPOINT") == "s3_endpoint"
    assert settings_field("MLCYCLE_ROLLOUT__AFTER_PROMOTION") == "rollout.after_promotion"
    assert settings_field("MLCYCLE_SERVING__INFERENCE_LOG__ENABLED") == "serving.inference_log.enabled"
    assert settings_field("MLCYCLE_S3_ENDPIONT") is None
    assert settings_field("MLCYCLE_ROLLOUT__NO_SUCH_KEY") is None
    assert settings_field("MLCYCLE_STORE__BACKEND") is None  # `store` is not a section
    assert unknown_variables({"PREFECT_API_URL": 1, "PREFECT_API_URLS": 1, "MLCYCLE_CONFIG": 1,
                              "MLCYCLE_BUCKET": 1}) == ["PREFECT_API_URLS", "MLCYCLE_BUCKET"]


# --------------------------------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_cli() -> list[str]:
    """``docker compose`` (v2 plugin) when present, else Debian's ``docker-compose`` (1.29)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 timeout=60).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    unavailable("neither `docker compose` nor `docker-compose` is installed (apt-get install -y docker-compose)")
    raise AssertionError("unreachable")


def compose_config(compose_cli: list[str], env_file: Path, values: dict[str, str]) -> subprocess.CompletedProcess:
    """``compose config`` of infra/docker-compose.yml with ``values`` as its env file, nothing inherited."""
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    clean = {k: v for k, v in os.environ.items()
             if k in ("PATH", "HOME", "LANG", "DOCKER_HOST", "TMPDIR")}  # no MLCYCLE_/PREFECT_/secret leaks in
    return subprocess.run([*compose_cli, "-p", "mlcycle", "--env-file", str(env_file), "-f", str(COMPOSE_FILE),
                           "config"], capture_output=True, text=True, env=clean, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def rendered(compose_cli, tmp_path_factory) -> dict:
    result = compose_config(compose_cli, tmp_path_factory.mktemp("compose") / "sample.env", SAMPLE_ENV)
    assert result.returncode == 0, f"{' '.join(compose_cli)} config rejected {COMPOSE_FILE}:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid_and_wires_services_by_name(rendered):
    from mlcycle.tasks.settings.naming import DEFAULT_PROJECT, serve_port

    services = rendered["services"]
    assert set(services) == SERVICES
    env = {name: s.get("environment") or {} for name, s in services.items()}

    # the Prefect server stores its state in the postgres service, with the password from the env file
    assert env["prefect-server"]["PREFECT_API_DATABASE_CONNECTION_URL"] == (
        f"postgresql+asyncpg://prefect:{SAMPLE_ENV['POSTGRES_PASSWORD']}@postgres:5432/prefect")
    assert env["postgres"]["POSTGRES_PASSWORD"] == SAMPLE_ENV["POSTGRES_PASSWORD"]
    assert env["prefect-server"]["PREFECT_SERVER_API_AUTH_STRING"] == SAMPLE_ENV["PREFECT_AUTH_STRING"]
    for client in ("deploy", "worker"):
        assert env[client]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env[client]["PREFECT_API_AUTH_STRING"] == SAMPLE_ENV["PREFECT_AUTH_STRING"]
    # every mlcycle process reaches MinIO by service name with the MinIO credentials
    for name in ("worker", "serving"):
        assert env[name]["MLCYCLE_STORE"] == "minio"
        assert env[name]["MLCYCLE_S3_ENDPOINT"] == "minio:9000"
        assert env[name]["MLCYCLE_S3_ACCESS_KEY"] == SAMPLE_ENV["MINIO_ROOT_USER"]
        assert env[name]["MLCYCLE_S3_SECRET_KEY"] == SAMPLE_ENV["MINIO_ROOT_PASSWORD"]
    assert "prefect --no-prompt deploy --all" in " ".join(services["deploy"]["command"])
    assert services["worker"]["command"][:5] == ["prefect", "worker", "start", "--pool", "mlcycle-process"]
    # the project names the deployments (prefect.yaml) and the pool, the same in the deploy job and the worker
    assert env["deploy"]["MLCYCLE_PROJECT_NAME"] == env["worker"]["MLCYCLE_PROJECT_NAME"] == "mlcycle"
    assert '"$${MLCYCLE_PROJECT_NAME}-process"' in COMPOSE_FILE.read_text()

    # start order: each waits for what it needs to be healthy (the deploy job: to have finished)
    conditions = {name: {dep: c["condition"] for dep, c in (s.get("depends_on") or {}).items()}
                  for name, s in services.items()}
    assert conditions["prefect-server"] == {"postgres": "service_healthy"}
    assert conditions["deploy"] == {"prefect-server": "service_healthy"}
    assert conditions["worker"] == {"minio": "service_healthy", "prefect-server": "service_healthy",
                                    "deploy": "service_completed_successfully"}
    assert conditions["serving"] == {"minio": "service_healthy"}
    assert all("healthcheck" in s for name, s in services.items() if name != "deploy")

    # the serving container: the named image, on serving.port (the default project's), checked on /readyz
    serving = services["serving"]
    port = serve_port(DEFAULT_PROJECT)
    assert serving["image"] == SAMPLE_ENV["MLCYCLE_SERVING_IMAGE"]
    assert env["serving"]["BENTOML_PORT"] == str(port)
    assert f"127.0.0.1:{port}/readyz" in " ".join(serving["healthcheck"]["test"])
    # the flows image is built from this checkout; published ports stay on loopback unless told otherwise
    assert services["worker"]["build"]["dockerfile"] == "infra/Dockerfile.flows"
    assert Path(services["worker"]["build"]["context"]).resolve() == ROOT
    published = [p for s in services.values() for p in s.get("ports", [])]
    loopback = [p for p in published if str(p).startswith("127.0.0.1:") or
                (isinstance(p, dict) and p.get("host_ip") == "127.0.0.1")]  # compose v1 / v2 render ports differently
    assert published and loopback == published, published
    assert "ports" not in services["postgres"]


def test_compose_sets_only_variables_mlcycle_and_prefect_read(rendered, monkeypatch):
    for name, service in rendered["services"].items():
        env = service.get("environment") or {}
        assert unknown_variables(env) == [], f"service {name} sets variables nothing reads"
    worker = settings_from(rendered["services"]["worker"]["environment"], monkeypatch)
    assert worker.store == "minio" and worker.s3_endpoint == "minio:9000" and not worker.s3_secure
    assert worker.s3_access_key.get_secret_value() == SAMPLE_ENV["MINIO_ROOT_USER"]
    assert worker.rollout.after_promotion is False
    assert SAMPLE_ENV["MINIO_ROOT_PASSWORD"] not in repr(worker)


@pytest.mark.parametrize("missing", ["MINIO_ROOT_PASSWORD", "POSTGRES_PASSWORD", "PREFECT_AUTH_STRING",
                                     "MLCYCLE_SERVING_IMAGE"])
def test_compose_refuses_a_missing_secret_naming_it(compose_cli, tmp_path, missing):
    values = {k: v for k, v in SAMPLE_ENV.items() if k != missing}
    result = compose_config(compose_cli, tmp_path / "partial.env", values)
    assert result.returncode != 0
    assert missing in result.stderr, result.stderr


def test_env_example_declares_exactly_the_required_variables():
    body = "\n".join(line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", body))
    declared = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
                if line and not line.startswith("#")}
    assert required == declared == set(SAMPLE_ENV)
    # no value in the template is a usable secret
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.startswith(("MINIO_ROOT_PASSWORD=", "POSTGRES_PASSWORD=")):
            assert line.endswith("="), line
    assert (INFRA / ".gitignore").read_text().splitlines().count(".env") == 1


def test_flows_dockerfile_copies_only_what_exists_and_the_context_admits():
    admitted = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.startswith("!")}
    sources = []
    for line in FLOWS_DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"infra/Dockerfile.flows copies {source}, which is not in the repository"
        assert source.rstrip("/").split("/")[0] in admitted, f".dockerignore keeps {source} out of the context"
    for needed in ("tasks", "flows", "bentos", "mlcycle.yaml", "prefect.yaml", "requirements.lock"):
        assert needed in admitted


# --------------------------------------------------------------------------------------------------
# Kubernetes manifests
# --------------------------------------------------------------------------------------------------


def k8s_resources() -> dict[str, dict]:
    """Every resource of infra/k8s (kustomization.yaml aside), by ``kind/name``."""
    resources = {}
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                resources[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return resources


def strict_validation_errors(resource: dict) -> str | None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"
    return None


def test_k8s_manifests_validate_strictly_against_the_schema():
    resources = k8s_resources()
    assert set(resources) == {"Namespace/mlcycle", "ConfigMap/mlcycle-serving-config", "Deployment/mlcycle-serving",
                              "Service/mlcycle-serving", "PodDisruptionBudget/mlcycle-serving",
                              "HorizontalPodAutoscaler/mlcycle-serving"}
    errors = {key: strict_validation_errors(r) for key, r in resources.items()}
    assert {k: e for k, e in errors.items() if e} == {}


def test_a_broken_manifest_fails_validation():
    deployment = k8s_resources()["Deployment/mlcycle-serving"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["paht"] = "/readyz"  # a typo strict mode must catch
    assert "paht" in strict_validation_errors(deployment)
    deployment = k8s_resources()["Deployment/mlcycle-serving"]
    deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = [0]
    assert "maxUnavailable" in strict_validation_errors(deployment)


def test_kustomization_applies_every_manifest_and_only_those():
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert kustomization["namespace"] == "mlcycle"
    from mlcycle.tasks.settings import RolloutSettings

    assert [i["name"] for i in kustomization["images"]] == [RolloutSettings().image_name]


def serving_container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_serving_deployment_rolls_out_without_losing_capacity_and_runs_locked_down(monkeypatch):
    from mlcycle.tasks.settings import RolloutSettings, ServingSettings
    from mlcycle.tasks.settings.naming import DEFAULT_PROJECT, serve_port

    resources = k8s_resources()
    deployment = resources["Deployment/mlcycle-serving"]
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    container = serving_container(deployment)

    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert "replicas" not in spec  # the HPA owns the count
    hpa = resources["HorizontalPodAutoscaler/mlcycle-serving"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"] and hpa["minReplicas"] >= 2
    assert resources["PodDisruptionBudget/mlcycle-serving"]["spec"]["minAvailable"] == 1

    # the port is serving.port (the default project's), the one BENTOML_PORT sets, the one the Service and probes
    # target
    port = serve_port(DEFAULT_PROJECT)
    env = {e["name"]: e for e in container["env"]}
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert env["BENTOML_PORT"]["value"] == str(port)
    assert resources["Service/mlcycle-serving"]["spec"]["ports"][0]["targetPort"] == "http"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= ServingSettings().readiness_timeout_seconds
    assert container["image"] == RolloutSettings().image_name

    # non-root, read-only root, nothing extra
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("emptyDir" in volumes[m["name"]] for m in container["volumeMounts"])
    assert set(container["resources"]) == {"requests", "limits"}

    # secrets only by reference; the API token is optional
    for name in ("MLCYCLE_S3_ACCESS_KEY", "MLCYCLE_S3_SECRET_KEY", "MLCYCLE_API_TOKEN"):
        assert "value" not in env[name] and "secretKeyRef" in env[name]["valueFrom"], name
    assert env["MLCYCLE_API_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True

    # what the pod's environment sets, mlcycle reads (and accepts)
    configmap = resources["ConfigMap/mlcycle-serving-config"]["data"]
    variables = {**configmap, **{n: e.get("value", "<secret>") for n, e in env.items()}}
    assert unknown_variables(variables) == []
    served = settings_from(configmap, monkeypatch)
    assert served.store == "minio" and served.s3_bucket == configmap["MLCYCLE_S3_BUCKET"]


def test_serving_pod_security_context_runs_on_the_real_image(serving_images, rollout_models, s3_running):
    """The Deployment's container, run by Docker as Kubernetes would: if the service needed to write
    anywhere but its emptyDir mounts, or to run as root, it would not get ready here."""
    from minio import Minio


    image = serving_images.get("v1")  # skips or fails (CI) without an engine, like the image tests
    request = rollout_models.request  # a row of the served model's own test window
    from mlcycle.tasks.rollout.images import docker_client

    deployment = k8s_resources()["Deployment/mlcycle-serving"]
    pod, container = deployment["spec"]["template"]["spec"], serving_container(deployment)
    context = {**pod["securityContext"], **container["securityContext"]}
    bucket = f"k8s-{uuid.uuid4().hex[:10]}"
    Minio(s3_running.endpoint, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False).make_bucket(bucket)
    port = free_port()
    secrets = {("mlcycle-s3", "access-key"): S3_ACCESS_KEY, ("mlcycle-s3", "secret-key"): S3_SECRET_KEY}
    env = dict(k8s_resources()["ConfigMap/mlcycle-serving-config"]["data"])
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            if (ref["name"], ref["key"]) in secrets:
                env[item["name"]] = secrets[(ref["name"], ref["key"])]
            else:
                assert ref.get("optional"), f"{item['name']}: no test value for a required secret"
    # this machine: host networking only, and the tests' S3 server instead of MinIO
    env.update({"BENTOML_HOST": "127.0.0.1", "BENTOML_PORT": str(port), "MLCYCLE_S3_ENDPOINT": s3_running.endpoint,
                "MLCYCLE_S3_BUCKET": bucket})
    name = f"mlcycle-k8s-check-{uuid.uuid4().hex[:8]}"
    with contextlib.closing(docker_client()) as client:
        started = client.containers.run(
            image.tag, detach=True, name=name, network_mode="host", environment=env,
            user=f"{context['runAsUser']}:{context['runAsGroup']}", read_only=context["readOnlyRootFilesystem"],
            cap_drop=context["capabilities"]["drop"], security_opt=["no-new-privileges"],
            tmpfs={m["mountPath"]: "mode=1777" for m in container["volumeMounts"]}, init=True)
        try:
            _check_serving_container(started, port, bucket, env["MLCYCLE_STORE_PREFIX"], s3_running, request)
        finally:
            started.remove(force=True)


def _check_serving_container(container, port: int, bucket: str, prefix: str, s3_running, request: dict) -> None:
    import httpx
    from minio import Minio

    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        container.reload()
        assert container.status in ("created", "running"), container.logs(tail=40).decode(errors="replace")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        time.sleep(0.5)
    else:
        pytest.fail(f"not ready within 180 s: {container.logs(tail=40).decode(errors='replace')}")
    assert httpx.get(f"{base}/livez", timeout=5).status_code == 200
    answer = httpx.post(f"{base}/predict", json=request, timeout=30)
    assert answer.status_code == 200, answer.text
    assert 0 <= answer.json()["predictions"][0]["probability"] <= 1
    # the inference log reaches the bucket (flushed every few seconds) from the read-only container
    store = Minio(s3_running.endpoint, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if list(store.list_objects(bucket, prefix=f"{prefix}/inference/", recursive=True)):  # under the project
            break
        time.sleep(1)
    else:
        pytest.fail(f"no inference log in s3://{bucket}/{prefix}/inference/ after 60 s: "
                    f"{container.logs(tail=40).decode(errors='replace')}")
    logs = container.logs().decode(errors="replace")
    assert "Read-only file system" not in logs and "Permission denied" not in logs, logs[-2000:]
