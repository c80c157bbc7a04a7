"""The MinIO bucket policies of infra/minio/: least privilege, and they match what the code writes.

Two kinds of checks:

* **Static** -- each policy is valid IAM/MinIO JSON, names only the configured bucket, and grants exactly
  the prefixes the code uses: the flows' prefixes are *recorded* from real runs of the stages (ingest and
  validation with GX, a replaced batch, registration and promotion, labels, the inference log) plus the
  prefixes the rollout and the monitor declare as constants, so a new prefix in the code fails here.
* **Enforced** -- moto's S3 server enforces IAM policies once ``/moto-api/reset-auth`` is set, so the
  policies are attached to real IAM users and the real code runs with each user's keys: the flows user
  ingests, registers and promotes; the serving user pulls the champion into BentoML's model store but
  cannot write or delete; the inference writer appends log parts but cannot read, list or write
  elsewhere. moto's authorization is process-wide, so this server runs in its own process (the shared
  session server of tests/conftest.py stays open). Not enforced by moto: the ``s3:prefix`` condition on
  the serving user's ListBucket (moto ignores conditions on S3 requests; MinIO applies them).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.storage import LocalStore
from tests.support.env import ROOT, free_port, make_settings
from tests.support.registry import fitted_model, register_fitted

POLICY_DIR = ROOT / "infra" / "minio"
ROLES = ("flows", "serving", "inference-writer")
DAY = dt.date(2026, 10, 1)


def policy(role: str) -> dict:
    return json.loads((POLICY_DIR / f"mlcycle-{role}.json").read_text())


def grants(role: str) -> dict[str, set[str]]:
    """action -> the resources the policy allows it on."""
    out: dict[str, set[str]] = {}
    for statement in policy(role)["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            out.setdefault(action, set()).update(statement["Resource"])
    return out


def object_prefixes(resources: set[str], settings) -> set[str]:
    """The store prefixes (below the project's own, ``settings.store_scope``) the resources grant."""
    head = f"arn:aws:s3:::{settings.s3_bucket}/{settings.store_scope}/"
    assert all(r.startswith(head) and r.endswith("/*") for r in resources), resources
    return {r[len(head):-2] for r in resources}


class RecordingStore(LocalStore):
    """A local store that records every key written or deleted."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.written: set[str] = set()

    def put_bytes(self, key, data):
        self.written.add(key)
        return super().put_bytes(key, data)

    def put_file(self, key, path):
        self.written.add(key)
        return super().put_file(key, path)

    def create_exclusive(self, key, data):
        self.written.add(key)
        return super().create_exclusive(key, data)

    def replace_if(self, key, data, tag):
        self.written.add(key)
        return super().replace_if(key, data, tag)

    def delete(self, key):
        self.written.add(key)
        return super().delete(key)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A small fitted pipeline and the candidate describing it (tests/support/registry.py)."""
    return fitted_model(make_settings(tmp_path_factory.mktemp("fitted")))


def run_the_stages(settings, store, fitted, day: dt.date = DAY) -> None:
    """What the flows write, with the real functions: ingest + GX validation, a replaced batch, the registry,
    labels."""
    from mlcycle.tasks import ingest as ingest_mod
    from mlcycle.tasks.labels import write_labels
    from mlcycle.tasks.registry.aliases import promote

    with mock.patch.object(ingest_mod, "open_store", lambda _settings: store):  # ingest_date opens its own
        _ingest_three_ways(ingest_mod, settings, day)
    version = register_fitted(store, fitted)
    promote(store, version.name, version.version, reason="policy test")
    outcomes = pd.DataFrame({"request_id": ["r1"], "row": [0], settings.dataset.target: [1]})
    write_labels(store, settings.dataset, outcomes)


def _ingest_three_ways(ingest_mod, settings, day: dt.date) -> None:
    """A validated date, the same date replaced by other data (superseded/), a quarantined date."""
    from mlcycle.tasks.settings import DriftEvent

    ingest_mod.ingest_date(settings, day)
    reseeded = settings.model_copy(update={"simulator": settings.simulator.model_copy(update={"seed": 7})})
    ingest_mod.ingest_date(reseeded, day, replace=True)  # different data for the same date: superseded/
    unseen = {"start": day, "kind": "new_category", "feature": "region", "amount": 0.5, "category": "mars"}
    drifted = settings.model_copy(update={"simulator": settings.simulator.model_copy(
        update={"drift": [DriftEvent(**unseen)]})})
    manifest, _ = ingest_mod.ingest_date(drifted, day + dt.timedelta(days=1))  # fails validation: quarantine/
    assert manifest.zone == "quarantine"


def log_one_request(store, settings, request_id: str = "r1"):
    """The service's inference log writer, one request, closed (flushed)."""
    from mlcycle.tasks.inference_log import InferenceLogWriter

    spec = settings.dataset
    log = InferenceLogWriter(store, model="loans-default", model_version=1, features=spec.features,
                             id_column=spec.id_column, spill_dir=settings.home / "spill", upload_attempts=1,
                             retry_delay_seconds=0.01)
    columns = {f.name: (np.array([f.min or 1.0]) if f.kind == "numeric" else np.array([f.categories[0]], dtype=object))
               for f in spec.features}
    log.submit(request_id, "predict", columns, ["id-1"], {"probability": np.array([0.3]), "label": np.array([0])})
    return log.close()


# --------------------------------------------------------------------------------------------------
# static
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_policies_are_valid_and_name_only_the_configured_bucket(role, settings):
    doc = policy(role)
    assert doc["Version"] == "2012-10-17" and doc["Statement"]
    bucket = settings.s3_bucket
    for statement in doc["Statement"]:
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}, statement
        assert all(a.startswith("s3:") and "*" not in a for a in statement["Action"]), "no wildcard actions"
        for resource in statement["Resource"]:
            assert resource == f"arn:aws:s3:::{bucket}" or resource.startswith(f"arn:aws:s3:::{bucket}/"), resource
    assert f"infra/minio/mlcycle-{role}.json" in (POLICY_DIR / "README.md").read_text()
    assert role in (POLICY_DIR / "setup.sh").read_text().split("for role in ")[1].split(";")[0]


def test_the_flows_policy_grants_exactly_the_prefixes_the_flows_write(tmp_path, fitted):
    from mlcycle.tasks.inference_log import INFERENCE_PREFIX, LABELS_PREFIX
    from mlcycle.tasks.monitor.report import REPORTS
    from mlcycle.tasks.monitor.trigger import DECISIONS, TRIGGERS
    from mlcycle.tasks.records.rollout import CURRENT_KEY, HISTORY_PREFIX
    from mlcycle.tasks.rollout.orchestrate import LOCK_KEY
    from mlcycle.tasks.storage.s3 import PROBE_PREFIX

    settings = make_settings(tmp_path / "home")
    store = RecordingStore(settings.store_root)
    run_the_stages(settings, store, fitted)
    written = {k.split("/")[0] for k in store.written}
    declared = {k.split("/")[0] for k in (TRIGGERS, DECISIONS, REPORTS, CURRENT_KEY, HISTORY_PREFIX, LOCK_KEY,
                                          LABELS_PREFIX, PROBE_PREFIX)}
    assert {"raw", "validated", "quarantine", "validation", "superseded", "models", "labels"} <= written
    g = grants("flows")
    writable = object_prefixes(g["s3:PutObject"], settings)
    assert writable == written | declared, (
        f"policy grants {sorted(writable - written - declared)} nobody writes; code writes "
        f"{sorted((written | declared) - writable)} the policy does not grant")
    assert object_prefixes(g["s3:GetObject"], settings) == writable | {INFERENCE_PREFIX}
    assert g["s3:DeleteObject"] == g["s3:PutObject"]  # staging and superseded clean-up
    assert INFERENCE_PREFIX not in writable  # the flows read the inference log, only the service writes it


def test_serving_reads_only_the_registry_and_the_writer_only_appends_to_the_inference_log(settings):
    from mlcycle.tasks.inference_log import INFERENCE_PREFIX, part_key
    from mlcycle.tasks.registry.versions import model_root

    bucket = f"arn:aws:s3:::{settings.s3_bucket}"
    registry = model_root("loans-default").split("/")[0]
    serving = grants("serving")
    assert set(serving) == {"s3:HeadBucket", "s3:ListBucket", "s3:GetObject"}
    assert object_prefixes(serving["s3:GetObject"], settings) == {registry}
    listing = next(s for s in policy("serving")["Statement"] if "s3:ListBucket" in s["Action"])
    scope = settings.store_scope  # every key of the project is under it
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{scope}/{registry}/*"]}}
    writer = grants("inference-writer")
    assert writer == {"s3:HeadBucket": {bucket}, "s3:PutObject": {f"{bucket}/{scope}/{INFERENCE_PREFIX}/*"}}
    assert part_key(INFERENCE_PREFIX, DAY).startswith(f"{INFERENCE_PREFIX}/")


# --------------------------------------------------------------------------------------------------
# enforced by moto's IAM
# --------------------------------------------------------------------------------------------------

class IamS3:
    """moto's server in its own process, with one IAM user per policy and authorization switched on."""

    def __init__(self, bucket: str) -> None:
        import boto3
        import httpx

        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.2)
        admin = {"endpoint_url": self.url, "region_name": "us-east-1", "aws_access_key_id": "admin",
                 "aws_secret_access_key": "admin-setup-only"}
        iam, s3 = boto3.client("iam", **admin), boto3.client("s3", **admin)
        s3.create_bucket(Bucket=bucket)  # made by the administrator (infra/minio/setup.sh), not by the users
        self.keys: dict[str, tuple[str, str]] = {}
        for role in ROLES:
            arn = iam.create_policy(PolicyName=f"mlcycle-{role}",
                                    PolicyDocument=(POLICY_DIR / f"mlcycle-{role}.json").read_text())["Policy"]["Arn"]
            iam.create_user(UserName=f"mlcycle-{role}")
            iam.attach_user_policy(UserName=f"mlcycle-{role}", PolicyArn=arn)
            key = iam.create_access_key(UserName=f"mlcycle-{role}")["AccessKey"]
            self.keys[role] = (key["AccessKeyId"], key["SecretAccessKey"])
        answer = httpx.post(f"{self.url}/moto-api/reset-auth", content=b"0", timeout=10)
        assert answer.status_code == 200, answer.text

    def settings(self, home: Path, role: str, bucket: str):
        from pydantic import SecretStr

        access, secret = self.keys[role]
        return make_settings(home, store="minio", s3_endpoint=f"127.0.0.1:{self.port}", s3_bucket=bucket,
                             s3_access_key=SecretStr(access), s3_secret_key=SecretStr(secret), s3_timeout_seconds=5.0,
                             serving={"bentoml_home": home / "bentoml"})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def iam_s3(tmp_path_factory):
    bucket = make_settings(tmp_path_factory.mktemp("cfg")).s3_bucket
    server = IamS3(bucket)
    yield server, bucket
    server.stop()


@pytest.fixture(scope="module")
def as_users(iam_s3, tmp_path_factory, fitted):
    """The flows user has run the stages and the writer has logged a request: (settings, store) per role."""
    from mlcycle.tasks.storage import open_store

    server, bucket = iam_s3
    users = {}
    for role in ROLES:
        s = server.settings(tmp_path_factory.mktemp(role), role, bucket)
        users[role] = (s, open_store(s))
    settings, store = users["flows"]
    run_the_stages(settings, store, fitted)
    return users


def test_the_flows_user_runs_the_stages_and_reads_the_inference_log(as_users):
    from mlcycle.tasks.inference_reader import read_inference_log
    from mlcycle.tasks.partitions import list_partitions
    from mlcycle.tasks.records.rollout import CURRENT_KEY
    from mlcycle.tasks.registry.versions import read_alias

    settings, store = as_users["flows"]
    assert list_partitions(store, "validated") == [DAY]
    assert read_alias(store, "loans-default").version == 1
    store.put_bytes(CURRENT_KEY, b"{}")
    assert log_one_request(as_users["inference-writer"][1], settings, "from-writer").written_rows == 1
    assert "from-writer" in set(read_inference_log(store)["request_id"])


def test_the_serving_user_pulls_the_champion_but_cannot_change_the_registry(as_users):
    from mlcycle.tasks.serving.packaging import import_model
    from mlcycle.tasks.storage import StoreAuthError

    settings, store = as_users["serving"]
    packaged = import_model(store, settings, "champion")  # the verified model pull into BentoML's store
    assert packaged.version == 1 and Path(packaged.path, "model.joblib").is_file()
    model_key = "models/loans-default/1/model.joblib"
    for denied in (lambda: store.put_bytes(model_key, b"tampered"), lambda: store.delete(model_key),
                   lambda: store.put_bytes("models/loans-default/aliases/champion.json", b"{}"),
                   lambda: store.get_bytes(f"validated/date={DAY}/manifest.json"),
                   lambda: store.put_bytes("inference/date=2026-10-01/part-x.parquet", b"x")):
        with pytest.raises(StoreAuthError, match="credentials rejected .AccessDenied.; check MLCYCLE_S3_ACCESS_KEY"):
            denied()
    assert as_users["flows"][1].get_bytes(model_key)[:2] != b"ta"  # still the registered bytes


def test_the_inference_writer_appends_log_parts_and_nothing_else(as_users):
    from mlcycle.tasks.storage import StoreAuthError

    settings, store = as_users["inference-writer"]
    status = log_one_request(store, settings, "writer-only")
    assert status.written_rows == 1 and status.failed_uploads == 0 and status.spilled_parts == 0
    for denied in (lambda: store.get_bytes("models/loans-default/1/model.joblib"), lambda: store.list("inference/"),
                   lambda: store.list(""), lambda: store.put_bytes("models/loans-default/1/model.joblib", b"x"),
                   lambda: store.put_bytes(f"raw/date={DAY}/manifest.json", b"x"),
                   lambda: store.delete("models/loans-default/1/model.joblib")):
        with pytest.raises(StoreAuthError, match="AccessDenied"):
            denied()


def test_unknown_credentials_are_refused_naming_the_settings(iam_s3, tmp_path):
    from pydantic import SecretStr

    from mlcycle.tasks.storage import StoreAuthError, open_store

    server, bucket = iam_s3
    settings = server.settings(tmp_path / "home", "flows", bucket).model_copy(
        update={"s3_access_key": SecretStr("AKIANOBODY"), "s3_secret_key": SecretStr("not-a-key")})
    with pytest.raises(StoreAuthError, match="MLCYCLE_S3_ACCESS_KEY and MLCYCLE_S3_SECRET_KEY"):
        open_store(settings).get_bytes("models/loans-default/1/model.joblib")
