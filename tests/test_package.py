"""Packaging: registry -> BentoML model -> bento, and test-serving that refuses a bad bento with its reason."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlcycle.tasks.serving.client import CanaryFailed, verify_serving
from mlcycle.tasks.serving.packaging import BENTOFILE, BuildFailed, bentoml_env, build_bento, import_model
from mlcycle.tasks.serving.process import ServeFailed, ServeProcess, start_serving, wait_ready
from mlcycle.tasks.storage import sha256_file
from tests.support.env import ROOT


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A champion of this module's own: its tests damage the BentoML model and build impostor bentos, which
    the session's shared champion (tests/test_serving.py, the serving faults) must never see."""
    from tests.support.champion import package_champion

    return package_champion(tmp_path_factory.mktemp("package-champion"))


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        name, sep, version = line.strip().partition("==")
        if sep:
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def test_bentofile_pins_exactly_what_requirements_lock_pins_and_leaves_out_prefect():
    config = yaml.safe_load(BENTOFILE.read_text())
    packages = config["python"]["packages"]
    assert config["python"]["lock_packages"] is False
    assert all("==" in p for p in packages), packages
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    pins = _pins(packages)
    assert {name: (version, lock.get(name)) for name, version in pins.items() if lock.get(name) != version} == {}
    assert not {"prefect", "great-expectations", "fastapi", "dask", "distributed"} & set(pins)
    included = {p for pattern in config["include"] for p in ROOT.glob(pattern)}
    assert ROOT / "bentos" / "service.py" in included and not any("flows" in p.parts for p in included)


def test_the_service_imports_no_prefect(champion):
    """The bento's own sources (not the checkout's) import neither Prefect, GX nor Dask."""
    src = Path(champion.bento.path) / "src"
    code = ("import sys; from bentoml._internal.utils.args import set_arguments; "
            f"set_arguments({{'model_tag': '{champion.model.tag}'}}); import mlcycle.bentos.service as s; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'great_expectations', 'dask'}); "
            "print('IMPORTED', bad, 'FROM', s.__file__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=120,
                            env=bentoml_env(champion.settings))
    assert "IMPORTED []" in result.stdout, result.stderr[-2000:]
    assert f"FROM {src / 'mlcycle' / 'bentos' / 'service.py'}" in result.stdout


def test_the_bentoml_model_carries_the_registry_identity_and_is_reimported_when_damaged(champion):
    model = champion.model
    assert model.tag == f"loans-default:v{model.version}-{model.model_sha256[:12]}"
    listed = subprocess.run([sys.executable, "-m", "bentoml", "models", "get", model.tag, "-o", "json"],
                            capture_output=True, text=True, timeout=120, env=bentoml_env(champion.settings))
    info = json.loads(listed.stdout)
    assert info["labels"]["registry_version"] == str(model.version)
    assert info["labels"]["model_sha256"] == model.model_sha256 and info["labels"]["source"] == "mlcycle-registry"
    assert info["metadata"]["registry_uri"].endswith(f"models/loans-default/{model.version}")
    again = import_model(champion.store, champion.settings)
    assert not again.imported and again.tag == model.tag
    joblib_file = Path(model.path) / "model.joblib"
    joblib_file.write_bytes(joblib_file.read_bytes() + b"tampered")
    repaired = import_model(champion.store, champion.settings)
    assert repaired.imported and sha256_file(Path(repaired.path) / "model.joblib") == model.model_sha256


def test_the_bento_tag_and_labels_carry_the_registry_version_and_rebuilding_reuses_it(champion):
    bento, model = champion.bento, champion.model
    assert bento.tag.startswith(f"{champion.settings.serving.bento_name}:v{model.version}-")
    info = yaml.safe_load((Path(bento.path) / "bento.yaml").read_text())
    assert info["labels"]["model_version"] == str(model.version) and info["labels"]["model_name"] == model.name
    assert info["labels"]["model_sha256"] == model.model_sha256 and info["args"] == {"model_tag": model.tag}
    requirements = (Path(bento.path) / "env" / "python" / "requirements.txt").read_text()
    assert "scikit-learn==1.9.1" in requirements and "prefect" not in requirements
    tasks = Path(bento.path) / "src" / "mlcycle" / "tasks"
    assert sorted(p.relative_to(tasks).as_posix() for p in tasks.rglob("*") if p.is_file()) == [
        "__init__.py", "calibrated.py", "inference_journal.py", "inference_log.py", "inference_rows.py",
        "predictions.py", "schema.py",
        "settings/__init__.py", "settings/base.py", "settings/dataset.py", "settings/loader.py",
        "settings/monitoring.py", "settings/naming.py", "settings/problem.py", "settings/sections.py",
        "storage/__init__.py", "storage/base.py", "storage/local.py", "storage/s3.py"]
    assert not build_bento(champion.settings, model).built


def test_an_older_bento_gets_only_the_serving_keys_its_bundled_config_declares(tmp_path):
    """Serving a bento built before a settings key existed (a rollback) must not fail on that key."""
    from mlcycle.tasks.serving.packaging import serving_overrides
    from tests.support.env import make_settings

    bundled = tmp_path / "mlcycle.yaml"
    bundled.write_text("serving:\n  max_records: 1000\n  inference_log:\n    flush_rows: 20000\n")
    settings = make_settings(tmp_path / "home", serving={"max_records": 100, "trace_requests": True,
                                                         "inference_log": {"flush_rows": 10}})
    assert serving_overrides(settings, bundled) == {"MLCYCLE_SERVING__MAX_RECORDS": "100",
                                                    "MLCYCLE_SERVING__INFERENCE_LOG__FLUSH_ROWS": "10"}


def test_a_bento_build_failure_names_the_tail_of_bentomls_output(champion, tmp_path):
    broken = tmp_path / "bentofile.yaml"
    broken.write_text(BENTOFILE.read_text().replace("mlcycle.bentos.service:ModelService",
                                                    "mlcycle.bentos.service:NoSuchService"))
    with pytest.raises(BuildFailed, match=r"bentoml build of mlcycle-model:v\d+-\w+ failed \(exit code 1\): "
                                          r".*NoSuchService"):
        build_bento(champion.settings, champion.model, bentofile=broken)


def test_port_in_use_crash_and_readiness_timeout_are_named(champion, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ServeFailed, match=f"port {port} on 127.0.0.1 is in use"):
            start_serving(champion.settings, champion.bento.tag, port=port)
    missing = start_serving(champion.settings, "mlcycle-model:v0-doesnotexist")
    with pytest.raises(ServeFailed, match="exited with code 1 before it was ready; log .*doesnotexist"):
        wait_ready(missing, 60)
    log = tmp_path / "slow.log"
    log.write_text("starting...\nstill loading\n")
    slow = ServeProcess(bento_tag="x:y", host="127.0.0.1", port=9, log_path=log,
                        process=subprocess.Popen(["sleep", "30"], start_new_session=True))
    try:
        with pytest.raises(ServeFailed, match=r"(?s)was not ready at http://127.0.0.1:9/readyz within 1s; "
                                              r"log .*slow.log: starting.*still loading"):
            wait_ready(slow, 1)
    finally:
        slow.stop(grace=1)


def test_test_serving_refuses_a_bento_whose_model_file_was_altered(champion):
    """The service verifies sha256 before unpickling: the tampered bento never gets ready, and says why."""
    joblib_file = Path(champion.model.path) / "model.joblib"
    original = joblib_file.read_bytes()
    joblib_file.write_bytes(original + b"\0")
    try:
        with pytest.raises(ServeFailed, match="fails to start .*ModelIntegrityError: .*does not match the registry's"):
            verify_serving(champion.store, champion.settings, champion.bento)
    finally:
        joblib_file.write_bytes(original)


def test_test_serving_refuses_a_bento_that_serves_another_model(champion, tmp_path):
    """A bento whose (self-consistent) model is not the registry version: the canaries catch it."""


    from mlcycle.tasks.records.serving import PackagedModel
    from mlcycle.tasks.schema import ServedModel
    from mlcycle.tasks.serving.packaging import save_bento_model
    from mlcycle.tasks.storage import sha256_bytes
    from mlcycle.tasks.training.challenger import dump_model

    loaded = champion.loaded
    # same structure, perturbed estimator; a new list, so the shared champion's pipeline is not mutated
    other = loaded.pipeline.__class__(list(loaded.pipeline.steps))
    estimator = loaded.pipeline.named_steps["model"]
    other.steps[-1] = ("model", _shifted(estimator))
    data = dump_model(other)
    digest = sha256_bytes(data)
    served = ServedModel.model_validate_json((Path(champion.model.path) / "served_model.json").read_text())
    served = served.model_copy(update={"model_sha256": digest})
    tag = f"loans-default:v{champion.model.version}-impostor{digest[:6]}"
    path = save_bento_model(champion.settings, tag, {"model.joblib": data,
                                                     "served_model.json": served.model_dump_json().encode()})
    impostor = PackagedModel(tag=tag, name=champion.model.name, version=champion.model.version, model_sha256=digest,
                             path=path, imported=True)
    bento = build_bento(champion.settings, impostor)
    with pytest.raises(CanaryFailed, match=r"disagrees with the in-process pipeline on \d+ of 120 canary rows of the "
                                           r"test window .* \(tolerance 1e-09\): worst row"):
        verify_serving(champion.store, champion.settings, bento)


def _shifted(estimator):
    """A copy of a fitted estimator whose scores differ slightly (HGB: a shifted baseline)."""
    import copy

    clone = copy.deepcopy(estimator)
    clone._baseline_prediction = clone._baseline_prediction + 0.05
    return clone


# --------------------------------------------------------------------------------------------------
# the flow and the CLI
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def champion_env(champion, monkeypatch):
    from mlcycle.tasks.settings import get_settings

    monkeypatch.setenv("MLCYCLE_HOME", str(champion.settings.home))
    for key, value in {"MAX_BODY_BYTES": 65536, "MAX_RECORDS": 100, "CANARY_ROWS": 120, "LATENCY_REQUESTS": 20}.items():
        monkeypatch.setenv(f"MLCYCLE_SERVING__{key}", str(value))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.mark.flow
def test_package_flow_test_serves_the_champion_and_serve_background_leaves_it_serving(champion, champion_env,
                                                                                     prefect_harness):
    """`mlcycle package` (package + test-serve), then `mlcycle serve --background` until `down`."""
    import httpx

    from mlcycle.flows.package import package_flow
    from mlcycle.tasks import stack
    from mlcycle.tasks.inference_reader import read_inference_log

    settings = champion.settings
    outcome = package_flow()
    assert outcome.model_version == champion.model.version and outcome.bento_tag == champion.bento.tag
    canary = outcome.check.canary
    assert canary.rows == 120 and canary.mismatches == 0 and canary.labels_agree
    assert max(canary.max_abs_diff_predict, canary.max_abs_diff_batch) <= 1e-9
    assert outcome.check.latency.requests == 20
    try:
        served = subprocess.run([sys.executable, "-m", "mlcycle.flows.cli", "serve", "--background", "--port", "0",
                                 "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert served.returncode == 0, served.stderr[-2000:]
        info = json.loads(served.stdout)
        assert info["model_version"] == champion.model.version and info["bento"] == champion.bento.tag
        assert "curl -s -X POST" in info["example"]
        example = json.loads(info["example"].split("-d '", 1)[1].rstrip("'"))
        answer = httpx.post(f"{info['url']}/predict", json=example).json()
        assert answer["model_version"] == champion.model.version
        assert stack.read_service(settings, "model-server").url == info["url"]
    finally:
        stopped = stack.down(settings)
    assert "model-server" in stopped
    assert answer["request_id"] in set(read_inference_log(champion.store)["request_id"])  # flushed on `down`


@pytest.mark.flow
def test_package_flow_fails_with_the_reason_when_test_serving_fails(champion, champion_env, prefect_harness):
    from mlcycle.flows.package import package_flow

    champion_env.setenv("MLCYCLE_SERVING__LATENCY_BUDGET_MS", "0.001")
    from mlcycle.tasks.settings import get_settings

    get_settings.cache_clear()
    with pytest.raises(CanaryFailed, match=r"single-row /predict latency p95 .* is over the budget of 0 ms"):
        package_flow(version=champion.model.version)


@pytest.mark.flow
def test_cli_package_exit_codes(champion, champion_env, prefect_harness, capsys):
    from tests.support.env import run_cli

    code, _, err = run_cli(champion_env, capsys, "package", "--version", "zero")
    assert code == 2 and "--version must be a version number" in err
    code, _, err = run_cli(champion_env, capsys, "serve", "--port", "70000")
    assert code == 2 and "--port must be between 0 and 65535" in err
    code, _, err = run_cli(champion_env, capsys, "package", "--version", "99")
    assert code == 1 and "model 'loans-default' has no version 99" in err and len(err.strip().splitlines()) == 1
