"""Secrets never leak: S3 keys and the API token stay out of every log, artifact, object and file.

Sentinel values (with characters that change under URL encoding) are set as ``MLCYCLE_S3_ACCESS_KEY``,
``MLCYCLE_S3_SECRET_KEY`` and ``MLCYCLE_API_TOKEN``; the store is the MinIO backend against moto's S3
server. Then the real life cycle runs through Prefect: backfill (ingest + GX validation + Data Docs),
train + gate + register + promote, package (BentoML import + ``bentoml build`` + test-serving with a real
``bentoml serve`` that requires the token), logged traffic, monitor. Afterwards everything that was
written or said is searched for each sentinel, raw, URL-encoded and base64-encoded:

* every log line: Prefect's logs read back through its API, Python logging records, the process's
  stdout/stderr (captured at the file-descriptor level, so subprocesses and threads are included);
* every Prefect artifact (read back through the client) and the Prefect database file itself (flow and
  task runs, parameters, states, logs, artifacts);
* every object in the bucket (manifests, validation results, Data Docs HTML, model metadata, reports,
  inference log parts, deployment records);
* every file under the home folder: the BentoML store (the bento and its bundled config, the model),
  ``bentoml serve`` logs, pid files, spill folders;
* ``repr``/``str``/JSON of the settings, and the errors the store raises.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from tests.support.env import make_settings

pytestmark = pytest.mark.flow

TAG = uuid.uuid4().hex[:12]
SECRETS = {
    "s3_access_key": f"AKIASENTINEL{TAG.upper()}",
    "s3_secret_key": f"sEnTiNeL/s3+secret={TAG}",
    "api_token": f"sentinel-token/{TAG}+api",
}


def forms(value: str) -> set[str]:
    """The secret as it could appear: raw, URL-encoded, base64 (standard and URL-safe, with and without padding)."""
    raw = value.encode()
    b64 = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    return {value, quote(value, safe=""), quote_plus(value)} | b64 | {b.rstrip("=") for b in b64}


NEEDLES = {form: name for name, value in SECRETS.items() for form in forms(value)}
# A bearer header or basic-auth pair is also a leak
NEEDLES.update({base64.b64encode(f"{SECRETS['s3_access_key']}:{SECRETS['s3_secret_key']}".encode()).decode():
                "s3 basic auth"})


def leaks(text: str | bytes, where: str) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode(errors="replace")
    return [f"{NEEDLES[n]} ({n!r}) in {where}" for n in NEEDLES if n.encode() in data]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.name} {record.levelname} {record.getMessage()} {record.exc_text or ''}")
        except Exception:  # noqa: BLE001 - a record that cannot format is no leak
            self.lines.append(f"{record.name} {record.msg!r}")


@pytest.fixture
def secret_env(monkeypatch, tmp_path, s3_running):
    """MLCYCLE_* for a fast life cycle on the MinIO backend, with the sentinel secrets."""
    from mlcycle.tasks.settings import get_settings

    env = {
        "STORE": "minio", "S3_ENDPOINT": s3_running.endpoint, "S3_BUCKET": f"sec-{TAG}",
        "S3_TIMEOUT_SECONDS": "5", "S3_ACCESS_KEY": SECRETS["s3_access_key"],
        "S3_SECRET_KEY": SECRETS["s3_secret_key"], "API_TOKEN": SECRETS["api_token"],
        "SIMULATOR__ROWS_PER_DAY": "700", "TRAINING__N_ITER": "2", "TRAINING__N_JOBS": "1",
        "TRAINING__FAMILY": "logistic_regression", "TRAINING__WINDOW_DAYS": "6", "GATE__BOOTSTRAP_SAMPLES": "300",
        "ROLLOUT__AFTER_PROMOTION": "false", "SERVING__CANARY_ROWS": "60", "SERVING__LATENCY_REQUESTS": "10",
        "SERVING__INFERENCE_LOG__FLUSH_INTERVAL_SECONDS": "1",
    }
    monkeypatch.setenv("MLCYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLCYCLE_SECRETS_DIR", str(tmp_path / "no-secret-files"))
    for key, value in env.items():
        if value is not None:
            monkeypatch.setenv(f"MLCYCLE_{key}", value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_settings_never_show_their_secrets(secret_env):
    settings = secret_env
    planted = base64.b64encode(SECRETS["api_token"].encode()).decode()  # the detector itself finds encoded forms
    assert leaks(f"Authorization: Basic {planted}", "probe") and leaks(quote_plus(SECRETS["s3_secret_key"]), "probe")
    assert settings.s3_secret_key.get_secret_value() == SECRETS["s3_secret_key"]
    assert settings.api_token is not None and settings.api_token.get_secret_value() == SECRETS["api_token"]
    for text, where in ((repr(settings), "repr"), (str(settings), "str"), (settings.model_dump_json(), "JSON"),
                        (repr(settings.model_dump()), "model_dump")):
        assert not leaks(text, where)


def test_store_errors_never_carry_the_credentials(secret_env, tmp_path):
    from mlcycle.tasks.storage import StoreError, open_store
    from tests.support.env import free_port

    down = secret_env.model_copy(update={"s3_endpoint": f"127.0.0.1:{free_port()}", "s3_timeout_seconds": 1.0})
    with pytest.raises(StoreError) as info:
        open_store(down).get_bytes("models/x/1/metadata.json")
    assert "unreachable" in str(info.value) and not leaks(repr(info.value) + str(info.value.__cause__), "error")


def test_no_secret_reaches_logs_artifacts_objects_or_files(secret_env, prefect_harness, capfd, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import get_current_settings

    from mlcycle.flows.ingest import backfill_flow
    from mlcycle.flows.monitor import monitor_flow
    from mlcycle.flows.package import package_flow
    from mlcycle.flows.train import train_flow
    from mlcycle.tasks.registry.versions import load_model, model_name
    from mlcycle.tasks.storage import open_store
    from mlcycle.tasks.traffic import log_in_process

    settings = secret_env
    records = Records()
    root = logging.getLogger()
    root.addHandler(records)
    # Everything at DEBUG into Python logging, and the run loggers' INFO (not only the suite's WARNING) to the API
    levels = {name: logging.getLogger(name).level for name in ("", "prefect.flow_runs", "prefect.task_runs")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG if name == "" else logging.INFO)
    try:
        backfill_flow(start="2026-10-02", end="2026-10-09")
        outcome = train_flow()
        assert outcome.promoted, outcome
        packaged = package_flow()  # `bentoml serve` with the token; canaries sent with it
        assert packaged.check.canary.mismatches == 0
        store = open_store(settings)
        champion = load_model(store, model_name(settings), "champion")
        log_in_process(store, settings, champion, [dt.date(2026, 10, 10)], rows_per_day=300,
                       spill_dir=settings.home / "spill")
        report = monitor_flow(start="2026-10-10T00:00:00+00:00", end="2026-10-11T00:00:00+00:00")
        assert report.rows == 300, report.trigger
    finally:
        for handler in {h for name in levels for h in logging.getLogger(name).handlers}:
            if isinstance(handler, APILogHandler):
                handler.flush()  # ship what the run loggers queued before reading the logs back
        root.removeHandler(records)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    out, err = capfd.readouterr()

    found: list[str] = []
    found += leaks(out, "stdout") + leaks(err, "stderr") + leaks("\n".join(records.lines), "Python logging")
    assert records.lines and "loans-default" in "\n".join(records.lines) + out + err  # something was captured

    with get_client(sync_client=True) as client:
        logs = _every(client.read_logs)
        artifacts = _every(client.read_artifacts)
    assert any("validated" in log.message for log in logs) and len(artifacts) >= 4, (len(logs), len(artifacts))
    found += leaks("\n".join(f"{log.name} {log.message}" for log in logs), "Prefect logs (API)")
    for artifact in artifacts:
        found += leaks(f"{artifact.key} {artifact.description} {artifact.data}", f"artifact {artifact.key}")
    url = get_current_settings().server.database.connection_url  # a SecretStr in Prefect's settings
    database = Path((url.get_secret_value() if hasattr(url, "get_secret_value") else str(url)).split("///", 1)[1])
    assert database.is_file(), database
    for path in database.parent.glob(database.name + "*"):
        found += leaks(path.read_bytes(), f"Prefect database {path.name}")

    store = open_store(settings)
    keys = store.list()
    zones = {k.split("/")[0] for k in keys}
    assert {"raw", "validated", "validation", "models", "inference", "reports"} <= zones, zones
    assert any(k.endswith(".html") for k in keys)  # Data Docs and the drift report
    for key in keys:
        found += leaks(store.get_bytes(key), f"object {key}")

    files = [p for p in settings.home.rglob("*") if p.is_file()]
    bento_files = [p for p in files if "bentos" in p.parts]
    assert any(p.name == "mlcycle.yaml" for p in bento_files), "the bento's bundled config was not found"
    assert any(p.suffix == ".log" for p in files), "no serving log found under the home"
    for path in files:
        found += leaks(path.read_bytes(), f"file {path.relative_to(settings.home)}")
    assert not found, "secrets leaked:\n" + "\n".join(found[:20])


def _every(read, page: int = 200) -> list:
    """All items of a paginated Prefect client read (logs, artifacts)."""
    items: list = []
    while batch := read(limit=page, offset=len(items)):
        items += batch
        if len(batch) < page:
            break
    return items


def test_a_secret_file_is_read_and_stays_as_secret(tmp_path, monkeypatch):
    """Secret files (MLCYCLE_SECRETS_DIR, the Docker/Kubernetes convention) feed the same SecretStr fields."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "mlcycle_api_token").write_text(SECRETS["api_token"])
    monkeypatch.setenv("MLCYCLE_SECRETS_DIR", str(folder))
    settings = make_settings(tmp_path / "home")
    assert settings.api_token.get_secret_value() == SECRETS["api_token"]
    assert not leaks(repr(settings) + settings.model_dump_json(), "settings from a secret file")
    assert os.environ.get("MLCYCLE_API_TOKEN") is None
