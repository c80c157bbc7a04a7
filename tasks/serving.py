"""Packaging and test-serving: a registry version becomes a bento that has proven itself.

The path (plain functions; ``flows/package.py`` wires them as tasks)::

    import_model    registry version (sha256-verified) -> a BentoML model: the exact model.joblib, plus
                    served_model.json (version, sha256, threshold, dataset declaration, lineage summary);
                    labels carry the registry version and sha256, so `bentoml models list` says what it is
    build_bento     `bentoml build -f bentos/bentofile.yaml` (pinned serving requirements, no Prefect); the
                    bento's version is v<registry version>-<hash of model + sources>, its labels name the
                    model; building the same thing twice reuses the existing bento
    start_serving   `bentoml serve <bento>` on a free 127.0.0.1 port, in its own process group, log to a file
    wait_ready      until /readyz answers 200 (or the process dies, or the time is up: with the log's tail)
    check_running   against a running server: /metadata names the version; the test window's rows
                    through /predict and /predict_batch equal the in-process pipeline (abs tol
                    serving.canary_tolerance); single-row /predict p95 within serving.latency_budget_ms
    verify_serving  test-serving: start_serving + wait_ready + check_running + stop (any failure raises
                    ServeFailed / CanaryFailed naming the reason)

Every BentoML call runs with ``BENTOML_HOME`` = ``serving.bentoml_home`` (default ``<home>/bentoml``), so
the user's ~/bentoml is never touched; every subprocess gets that environment from :func:`bentoml_env`.
With ``api_token`` set, the service started here gets it in its environment (never in the bento) and
every request made here carries it (:func:`api_headers`).

The service never imports this module. Prefect appears only in the thin ``@task`` wrappers at the
bottom; the registry and training modules are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlcycle.tasks.schema import LineageSummary, ServedModel
from mlcycle.tasks.settings import Settings, config_path
from mlcycle.tasks.storage import ObjectStore

ROOT = Path(__file__).resolve().parents[1]
BENTOFILE = ROOT / "bentos" / "bentofile.yaml"
SERVED_MODEL_FILE = "served_model.json"


class ServingError(RuntimeError):
    """Packaging or test-serving failed; the message says which step and why."""


class BuildFailed(ServingError):
    """`bentoml build` failed; the message ends with the tail of its output."""


class ServeFailed(ServingError):
    """`bentoml serve` could not start or become ready (port in use, crash, timeout; with its log tail)."""


class CanaryFailed(ServingError):
    """The served model disagrees with the in-process pipeline, fails requests, or is too slow."""


# --------------------------------------------------------------------------------------------------
# BentoML's home
# --------------------------------------------------------------------------------------------------


def bentoml_home(settings: Settings) -> Path:
    return Path(settings.serving.bentoml_home or settings.home / "bentoml").resolve()


def bentoml_env(settings: Settings, *, bento_tag: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of every BentoML subprocess.

    Our BENTOML_HOME, no telemetry, and what the service reads at run time taken from ``settings``: home
    and object store (with credentials, from the environment only), so a server started from code writes
    its inference log where the caller's settings say. With ``bento_tag`` the config file is the bento's
    own bundled ``mlcycle.yaml`` (the bento's code and config stay a matching pair, also when an older
    bento is served again after the repository's settings gained keys), and the caller's ``serving``
    values that differ from it are passed as ``MLCYCLE_SERVING__*`` -- only keys that bento declares.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCYCLE_SERVING")}
    env.update({
        "BENTOML_HOME": str(bentoml_home(settings)),
        "BENTOML_DO_NOT_TRACK": "true",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
        "MLCYCLE_HOME": str(Path(settings.home).resolve()),
        "MLCYCLE_STORE": settings.store,
        "MLCYCLE_S3_ENDPOINT": settings.s3_endpoint,
        "MLCYCLE_S3_BUCKET": settings.s3_bucket,
        "MLCYCLE_S3_SECURE": str(settings.s3_secure).lower(),
        "MLCYCLE_S3_REGION": settings.s3_region,
        "MLCYCLE_S3_TIMEOUT_SECONDS": str(settings.s3_timeout_seconds),
    })
    for key, secret in (("MLCYCLE_S3_ACCESS_KEY", settings.s3_access_key),
                        ("MLCYCLE_S3_SECRET_KEY", settings.s3_secret_key),
                        ("MLCYCLE_API_TOKEN", settings.api_token)):
        if secret is not None and secret.get_secret_value():
            env[key] = secret.get_secret_value()
    path = bento_config(settings, bento_tag) if bento_tag else config_path()
    if path is not None:
        env["MLCYCLE_CONFIG"] = str(Path(path).resolve())
    if bento_tag:
        env.update(serving_overrides(settings, path))
    env.update(extra)
    return env


def serving_overrides(settings: Settings, bento_config_file: Path | None) -> dict[str, str]:
    """``MLCYCLE_SERVING__*`` for the caller's serving values that differ from a bento's bundled config."""
    import yaml

    declared: dict[str, Any] = {}
    if bento_config_file is not None:
        declared = (yaml.safe_load(Path(bento_config_file).read_text()) or {}).get("serving") or {}
    out: dict[str, str] = {}

    def walk(prefix: str, ours: dict[str, Any], theirs: dict[str, Any]) -> None:
        for key, value in ours.items():
            if key not in theirs or value is None:  # a key that bento may not know, or not expressible
                continue
            if isinstance(value, dict) and isinstance(theirs[key], dict):
                walk(f"{prefix}{key}__", value, theirs[key])
            elif value != theirs[key]:
                out[f"MLCYCLE_SERVING__{prefix}{key}".upper()] = value if isinstance(value, str) else json.dumps(value)

    walk("", settings.serving.model_dump(mode="json"), declared)
    return out


def bento_dir(settings: Settings, bento_tag: str) -> Path:
    name, _, version = bento_tag.partition(":")
    return bentoml_home(settings) / "bentos" / name / version


def bento_config(settings: Settings, bento_tag: str) -> Path | None:
    path = bento_dir(settings, bento_tag) / "src" / "mlcycle.yaml"
    return path if path.is_file() else None


def _model_store(settings: Settings):
    from bentoml._internal.models import ModelStore

    path = bentoml_home(settings) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return ModelStore(path)


# --------------------------------------------------------------------------------------------------
# registry -> BentoML model
# --------------------------------------------------------------------------------------------------


class PackagedModel(BaseModel):
    """A registry version in the BentoML model store."""

    tag: str  # BentoML model tag, name:version
    name: str  # registry name
    version: int  # registry version
    model_sha256: str
    path: str
    imported: bool  # False: it was already there, intact


def bento_model_tag(name: str, version: int, model_sha256: str) -> str:
    return f"{name.lower()}:v{version}-{model_sha256[:12]}"


def served_model_from(metadata, spec, registry_uri: str) -> ServedModel:
    """What the service needs to know about a registry version (tasks.registry.ModelVersion)."""
    names = [c.name for c in metadata.features]
    for column in metadata.features:  # the model's recorded input must still be what the dataset declares
        try:
            declared = spec.feature(column.name)
        except Exception:
            raise ServingError(f"{metadata.name} v{metadata.version} reads feature {column.name!r}, which the "
                               f"dataset declaration no longer has; retrain before packaging") from None
        if declared.kind != column.kind or (declared.categories or None) != (column.categories or None):
            raise ServingError(f"{metadata.name} v{metadata.version} was trained with {column.name!r} as "
                               f"{column.kind} {column.categories or ''}, the dataset now declares {declared.kind} "
                               f"{declared.categories or ''}; retrain before packaging")
    lineage = metadata.lineage
    return ServedModel(
        name=metadata.name, version=metadata.version, model_sha256=metadata.model_sha256,
        threshold=metadata.threshold, features=names, dataset=spec, registry_uri=registry_uri,
        lineage=LineageSummary(
            dataset=lineage.dataset, dataset_schema_hash=lineage.dataset_schema_hash, window=lineage.window,
            partitions=[p.date.isoformat() for p in lineage.partitions], code_version=lineage.code_version,
            trained_at=metadata.created_at, family=metadata.family,
            metrics={k: v for k, v in metadata.metrics.model_dump().items() if isinstance(v, float | None)},
            gate=metadata.gate.summary[:500],
        ),
    )


def import_model(store: ObjectStore, settings: Settings, ref: int | str = "champion") -> PackagedModel:
    """Copy a registry version (verified) into the BentoML model store; reuse an intact earlier import."""
    import bentoml
    from bentoml._internal.tag import Tag
    from bentoml.exceptions import NotFound

    from mlcycle.tasks.registry import MODEL_FILE, load_metadata, version_prefix
    from mlcycle.tasks.storage import get_verified, sha256_file
    from mlcycle.tasks.training import model_name

    name = model_name(settings)
    metadata = load_metadata(store, name, ref)  # ModelNotFound / IntegrityError name the problem
    data = get_verified(store, metadata.artifacts[MODEL_FILE].key, metadata.model_sha256)
    served = served_model_from(metadata, settings.dataset, store.uri(version_prefix(name, metadata.version)))
    tag = bento_model_tag(name, metadata.version, metadata.model_sha256)
    model_store = _model_store(settings)
    try:
        existing = model_store.get(tag)
    except NotFound:
        existing = None
    if existing is not None:
        model_file = Path(existing.path_of(MODEL_FILE))
        if model_file.is_file() and sha256_file(model_file) == metadata.model_sha256 and \
                Path(existing.path_of(SERVED_MODEL_FILE)).is_file():
            return PackagedModel(tag=tag, name=name, version=metadata.version, model_sha256=metadata.model_sha256,
                                 path=existing.path, imported=False)
        model_store.delete(tag)  # a damaged copy: import it again from the registry
    labels = {"source": "mlcycle-registry", "model_name": name, "model_version": str(metadata.version),
              "registry_version": str(metadata.version), "model_sha256": metadata.model_sha256,
              "family": metadata.family, "dataset_schema_hash": metadata.lineage.dataset_schema_hash,
              "code_version": metadata.lineage.code_version}
    info = {"registry_uri": served.registry_uri, "model_sha256": metadata.model_sha256,
            "threshold": metadata.threshold, "window": metadata.lineage.window, "features": served.features,
            "trained_at": metadata.created_at.isoformat(), "partitions": served.lineage.partitions,
            "metrics": served.lineage.metrics}
    with bentoml.models.create(Tag.from_taglike(tag), labels=labels, metadata=info,
                               _model_store=model_store) as model:
        Path(model.path_of(MODEL_FILE)).write_bytes(data)
        Path(model.path_of(SERVED_MODEL_FILE)).write_text(served.model_dump_json(indent=1))
    stored = model_store.get(tag)
    return PackagedModel(tag=tag, name=name, version=metadata.version, model_sha256=metadata.model_sha256,
                         path=stored.path, imported=True)


# --------------------------------------------------------------------------------------------------
# the bento
# --------------------------------------------------------------------------------------------------


class BentoRef(BaseModel):
    """A built bento: its tag and what it serves."""

    tag: str
    path: str
    model_tag: str
    model_name: str
    model_version: int
    model_sha256: str
    labels: dict[str, str]
    built: bool  # False: an identical bento already existed
    seconds: float


def bento_sources(bentofile: Path = BENTOFILE, root: Path = ROOT) -> list[Path]:
    """The files the bento includes (its bentofile's ``include:`` list), for the content hash."""
    import yaml

    config = yaml.safe_load(bentofile.read_text())
    return sorted({p for pattern in config.get("include", []) for p in root.glob(pattern) if p.is_file()})


def bento_version(model: PackagedModel, bentofile: Path = BENTOFILE, root: Path = ROOT) -> str:
    """``v<registry version>-<hash>``: the hash covers the model, the bentofile and every included file."""
    h = hashlib.sha256(model.tag.encode() + model.model_sha256.encode() + bentofile.read_bytes())
    for path in bento_sources(bentofile, root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return f"v{model.version}-{h.hexdigest()[:12]}"


def build_bento(settings: Settings, model: PackagedModel, *, bentofile: Path = BENTOFILE, root: Path = ROOT,
                extra_labels: dict[str, str] | None = None) -> BentoRef:
    """`bentoml build` the serving bento for ``model``; reuse an existing bento of the same content."""
    started = time.monotonic()
    version = bento_version(model, bentofile, root)
    name = settings.serving.bento_name
    tag = f"{name}:{version}"
    labels = {"model_name": model.name, "model_version": str(model.version), "model_sha256": model.model_sha256,
              "model_tag": model.tag, **(extra_labels or {})}
    existing = bento_dir(settings, tag)
    if (existing / "bento.yaml").is_file():
        return BentoRef(tag=tag, path=str(existing), model_tag=model.tag, model_name=model.name,
                        model_version=model.version, model_sha256=model.model_sha256, labels=labels, built=False,
                        seconds=round(time.monotonic() - started, 2))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlcycle-bento-") as context:
        staged = stage_build_context(bentofile, root, Path(context))
        argv = [sys.executable, "-m", "bentoml", "build", "-f", str(staged), "--name", name, "--version", version,
                "--arg", f"model_tag={model.tag}", "--do-not-track", "-o", "tag"]
        for key, value in labels.items():
            argv += ["--label", f"{key}={value}"]
        argv.append(context)
        result = _run_build(settings, argv, Path(context), tag)
    if result.returncode != 0 or not (existing / "bento.yaml").is_file():
        output = (result.stdout or "") + (result.stderr or "")
        raise BuildFailed(f"bentoml build of {tag} failed (exit code {result.returncode}): {_tail(output)}")
    return BentoRef(tag=tag, path=str(existing), model_tag=model.tag, model_name=model.name,
                    model_version=model.version, model_sha256=model.model_sha256, labels=labels, built=True,
                    seconds=round(time.monotonic() - started, 2))


# The source folders that are packages of the mlcycle namespace: tasks/x.py is imported as mlcycle.tasks.x.
PACKAGE_FOLDERS = ("tasks", "flows", "bentos")


def stage_build_context(bentofile: Path, root: Path, into: Path) -> Path:
    """Lay the bento's sources out as they are imported and return the staged bentofile.

    The bentofile lists sources as they sit in the repository (``tasks/schema.py``); in the bento they must
    sit where ``import mlcycle.tasks.schema`` finds them (``mlcycle/tasks/schema.py``), with nothing else
    of the checkout around them.
    """
    import shutil

    import yaml

    config = yaml.safe_load(bentofile.read_text())
    staged_include = set()
    for path in bento_sources(bentofile, root):
        relative = path.relative_to(root)
        if relative.parts[0] in PACKAGE_FOLDERS:
            relative = Path("mlcycle") / relative
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        staged_include.add(relative.parts[0] + ("/" if len(relative.parts) > 1 else ""))
    config["include"] = sorted(staged_include)
    staged = into / "bentofile.yaml"
    staged.write_text(yaml.safe_dump(config, sort_keys=False))
    return staged


def _run_build(settings: Settings, argv: list[str], context: Path, tag: str) -> subprocess.CompletedProcess:
    try:
        # the build imports the service module: no token in that process, so none can end up in the bento
        build_env = {k: v for k, v in bentoml_env(settings).items() if k != "MLCYCLE_API_TOKEN"}
        return subprocess.run(argv, cwd=context, env=build_env, capture_output=True, text=True,
                              timeout=settings.serving.build_timeout_seconds)
    except subprocess.TimeoutExpired as exc:
        raise BuildFailed(f"bentoml build of {tag} did not finish within "
                          f"{settings.serving.build_timeout_seconds:.0f}s; "
                          f"output tail: {_tail((exc.stdout or b'').decode(errors='replace'))}") from None


def _tail(text: str, chars: int = 1500) -> str:
    text = text.strip()
    return text if len(text) <= chars else "..." + text[-chars:]


# --------------------------------------------------------------------------------------------------
# a `bentoml serve` process
# --------------------------------------------------------------------------------------------------


def api_headers(settings: Settings) -> dict[str, str]:
    """The headers a client of the service sends: the bearer token when ``api_token`` is configured."""
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServeFailed(f"port {port} on {host} is in use ({exc.strerror}); stop what listens there or "
                              "choose another port (--port, serving.port)") from None


@dataclass
class ServeProcess:
    """A running `bentoml serve`: its URL, pid (its own process group) and log file."""

    bento_tag: str
    host: str
    port: int
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), chars)
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM `bentoml serve` (its workers flush their inference log and exit), SIGKILL after ``grace``.

        BentoML's arbiter starts each worker in a process group of its own, so the workers are
        collected first and killed too if anything is left after the arbiter is gone.
        """
        import psutil

        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(self.process.pid).children(recursive=True)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        return self.process.returncode


def start_serving(settings: Settings, bento_tag: str, *, port: int | None = None, host: str = "127.0.0.1",
                  log_path: Path | None = None, env: dict[str, str] | None = None) -> ServeProcess:
    """Start `bentoml serve <bento_tag>` in its own process group (port 0 or None: a free port)."""
    port = port or free_port(host)
    check_port_free(host, port)
    log_path = log_path or settings.run_dir / f"serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", host, "--port", str(port), "--do-not-track"]
    with open(log_path, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=bentoml_env(settings, bento_tag=bento_tag, **(env or {})),
                                   start_new_session=True,
                                   cwd=Path(settings.home).resolve() if Path(settings.home).is_dir() else None)
    return ServeProcess(bento_tag=bento_tag, host=host, port=port, log_path=log_path, process=process)


def wait_ready(serving: ServeProcess, timeout: float) -> float:
    """Wait until /readyz answers 200; return the seconds it took. ServeFailed with the log tail otherwise."""
    import httpx

    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        code = serving.process.poll()
        if code is not None:
            raise ServeFailed(f"bentoml serve {serving.bento_tag} exited with code {code} before it was ready; "
                              f"log {serving.log_path}: {serving.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{serving.url}/readyz", timeout=2.0).status_code == 200:
                return round(time.monotonic() - started, 2)
        failure = startup_failure(serving.log_tail(20_000))
        if failure:
            raise ServeFailed(f"bentoml serve {serving.bento_tag}: the service fails to start (its workers exit "
                              f"and are restarted): {failure}; log {serving.log_path}")
        time.sleep(0.25)
    raise ServeFailed(f"bentoml serve {serving.bento_tag} was not ready at {serving.url}/readyz within "
                      f"{timeout:.0f}s; log {serving.log_path}: {serving.log_tail()}")


def startup_failure(log: str, repeats: int = 2) -> str | None:
    """The error of a worker crash loop (BentoML restarts a worker whose startup failed), if the log shows one."""
    if log.count("Application startup failed") < repeats:
        return None
    errors = [line.strip() for line in log.splitlines()
              if line[:1].isalpha() and ("Error: " in line or "Exception: " in line)
              and not line.startswith("Error: [")]
    return errors[-1][:1000] if errors else "Application startup failed"


# --------------------------------------------------------------------------------------------------
# test-serving: canaries and the latency budget
# --------------------------------------------------------------------------------------------------


class CanaryReport(BaseModel):
    rows: int
    test_window: str
    max_abs_diff_predict: float
    max_abs_diff_batch: float
    tolerance: float
    mismatches: int
    labels_agree: bool


class LatencyReport(BaseModel):
    requests: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    budget_ms: float


class ServingCheck(BaseModel):
    bento_tag: str
    url: str
    ready_seconds: float
    canary: CanaryReport
    latency: LatencyReport
    metadata_version: int
    passed: bool = True


def canary_rows(store: ObjectStore, settings: Settings, model_name: str, version: int, rows: int):
    """The first ``rows`` rows of the model's test window (its validated partitions, sha256-verified)."""
    from mlcycle.tasks.registry import load_metadata
    from mlcycle.tasks.training import load_test_window

    metadata = load_metadata(store, model_name, version)
    frame = load_test_window(store, settings.dataset, metadata.lineage.split)
    split = metadata.lineage.split.test
    return frame.head(rows).reset_index(drop=True), f"{split.first_day}..{split.last_day}"


def records_payload(frame, spec, features: list[str]) -> list[dict[str, Any]]:
    """JSON-ready records: nulls for missing values, plain Python numbers, the id column as a string."""
    import pandas as pd

    out = []
    for row in frame[[spec.id_column, *features]].itertuples(index=False):
        record = {}
        for name, value in zip([spec.id_column, *features], row, strict=True):
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                record[name] = None
            elif name == spec.id_column:
                record[name] = str(value)
            elif hasattr(value, "item"):
                record[name] = value.item()
            else:
                record[name] = value
        out.append(record)
    return out


def columns_payload(records: list[dict[str, Any]], features: list[str], id_column: str) -> dict[str, list]:
    return {name: [r[name] for r in records] for name in [id_column, *features]}


def check_canaries(url: str, frame, expected, spec, features: list[str], threshold: float, tolerance: float,
                   test_window: str, client=None) -> CanaryReport:
    """Send ``frame`` through /predict (one request per 50 rows) and /predict_batch; compare with ``expected``."""
    import httpx
    import numpy as np

    records = records_payload(frame, spec, features)
    client = client or httpx.Client(timeout=60.0)
    served = []
    for start in range(0, len(records), 50):
        response = client.post(f"{url}/predict", json={"records": records[start:start + 50]})
        if response.status_code != 200:
            raise CanaryFailed(f"canary /predict request (rows {start}..{start + 49}) got HTTP {response.status_code}: "
                               f"{response.text[:500]}")
        served += [p["probability"] for p in response.json()["predictions"]]
    response = client.post(f"{url}/predict_batch", json={"columns": columns_payload(records, features,
                                                                                     spec.id_column)})
    if response.status_code != 200:
        raise CanaryFailed(f"canary /predict_batch request got HTTP {response.status_code}: {response.text[:500]}")
    body = response.json()
    batch = np.asarray(body["probabilities"], dtype=float)
    served_arr = np.asarray(served, dtype=float)
    expected = np.asarray(expected, dtype=float)
    diff_predict = np.abs(served_arr - expected)
    diff_batch = np.abs(batch - expected)
    mismatches = int(((diff_predict > tolerance) | (diff_batch > tolerance)).sum())
    labels_agree = bool(np.array_equal(np.asarray(body["labels"]), (expected >= threshold).astype(int)))
    report = CanaryReport(rows=len(records), test_window=test_window, max_abs_diff_predict=float(diff_predict.max()),
                          max_abs_diff_batch=float(diff_batch.max()), tolerance=tolerance, mismatches=mismatches,
                          labels_agree=labels_agree)
    if mismatches or not labels_agree:
        worst = int(np.argmax(np.maximum(diff_predict, diff_batch)))
        raise CanaryFailed(
            f"the served model disagrees with the in-process pipeline on {mismatches} of {len(records)} canary rows "
            f"of the test window {test_window} (tolerance {tolerance:g}): worst row {worst} "
            f"({records[worst].get(spec.id_column)}) served {served_arr[worst]!r} / batch {batch[worst]!r}, "
            f"expected {expected[worst]!r}" + ("" if labels_agree else "; labels differ too"))
    return report


def check_latency(url: str, records: list[dict[str, Any]], requests: int, budget_ms: float,
                  client=None) -> LatencyReport:
    """Time ``requests`` sequential single-row /predict calls; CanaryFailed if p95 is over the budget."""
    import httpx
    import numpy as np

    client = client or httpx.Client(timeout=60.0)
    times = []
    for i in range(requests + 3):
        started = time.perf_counter()
        response = client.post(f"{url}/predict", json={"records": [records[i % len(records)]]})
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise CanaryFailed(f"latency probe got HTTP {response.status_code}: {response.text[:300]}")
        if i >= 3:  # the first calls warm connections and caches
            times.append(elapsed)
    t = np.asarray(times)
    report = LatencyReport(requests=len(t), p50_ms=round(float(np.percentile(t, 50)), 2),
                           p95_ms=round(float(np.percentile(t, 95)), 2), max_ms=round(float(t.max()), 2),
                           budget_ms=budget_ms)
    if report.p95_ms > budget_ms:
        raise CanaryFailed(f"single-row /predict latency p95 {report.p95_ms:.1f} ms (p50 {report.p50_ms:.1f} ms, "
                           f"{report.requests} requests) is over the budget of {budget_ms:.0f} ms "
                           "(serving.latency_budget_ms)")
    return report


def check_running(store: ObjectStore, settings: Settings, url: str, model_name: str,
                  model_version: int) -> tuple[CanaryReport, LatencyReport]:
    """The canary and latency checks against a server already answering at ``url`` (test-serving, rollout).

    /metadata must report ``model_version``; the first ``serving.canary_rows`` rows of the model's test
    window must get the in-process pipeline's probabilities through /predict and /predict_batch; sequential
    single-row requests must meet ``serving.latency_budget_ms`` (p95). CanaryFailed names what failed.
    """
    import httpx

    from mlcycle.tasks.registry import load_model

    cfg = settings.serving
    loaded = load_model(store, model_name, model_version)
    frame, window = canary_rows(store, settings, model_name, model_version, cfg.canary_rows)
    expected = loaded.predict_proba(frame)
    threshold = cfg.threshold or loaded.metadata.threshold
    features = [c.name for c in loaded.metadata.features]
    with httpx.Client(timeout=60.0, headers=api_headers(settings)) as client:
        response = client.get(f"{url}/metadata")
        if response.status_code != 200 or response.json().get("model_version") != model_version:
            raise CanaryFailed(f"/metadata at {url} does not report {model_name} v{model_version}: "
                               f"HTTP {response.status_code} {response.text[:300]}")
        canary = check_canaries(url, frame, expected, settings.dataset, features, threshold, cfg.canary_tolerance,
                                window, client=client)
        latency = check_latency(url, records_payload(frame, settings.dataset, features), cfg.latency_requests,
                                cfg.latency_budget_ms, client=client)
    return canary, latency


def verify_serving(store: ObjectStore, settings: Settings, bento: BentoRef, *,
                   port: int | None = None) -> ServingCheck:
    """Test-serving: start the bento, wait for /readyz, run :func:`check_running`, stop it.

    ServeFailed (it does not start or get ready) or CanaryFailed (wrong answers, too slow) say why.
    (TFX's InfraValidator idea: the artifact that will be rolled out answers real requests correctly and
    in time before anything downstream sees it.)
    """
    serving = start_serving(settings, bento.tag, port=port,
                            log_path=settings.run_dir / f"test-serve-{bento.model_version}.log")
    try:
        ready = wait_ready(serving, settings.serving.readiness_timeout_seconds)
        canary, latency = check_running(store, settings, serving.url, bento.model_name, bento.model_version)
    finally:
        serving.stop()
    return ServingCheck(bento_tag=bento.tag, url=serving.url, ready_seconds=ready, canary=canary,
                        latency=latency, metadata_version=bento.model_version)


def example_request(settings: Settings, features: list[str] | None = None) -> dict[str, Any]:
    """One valid /predict body (a simulated record), for the printed curl example."""
    from mlcycle.tasks.simulator import simulate_batch

    spec = settings.dataset
    names = features or spec.feature_names
    frame = simulate_batch(settings.demo.start, settings.simulator, spec, rows=1).frame
    return {"records": records_payload(frame, spec, names)}


def curl_example(url: str, body: dict[str, Any], *, bearer: bool = False) -> str:
    """A copy-paste curl; with ``bearer`` it sends the token from the shell's $MLCYCLE_API_TOKEN (never inline)."""
    auth = "-H \"Authorization: Bearer $MLCYCLE_API_TOKEN\" " if bearer else ""
    return (f"curl -s -X POST {url}/predict -H 'Content-Type: application/json' {auth}"
            f"-d '{json.dumps(body, separators=(',', ':'))}'")


# --------------------------------------------------------------------------------------------------
# serving for humans: in the background (a stack service, stopped by `mlcycle down`)
# --------------------------------------------------------------------------------------------------

SERVICE_NAME = "model-server"


def serve_in_background(settings: Settings, bento_tag: str, port: int | None = None):
    """(Re)start the bento as a stack service (pid file + log under <home>/run/), wait until it is ready.

    A model server this stack started before is stopped first (it may serve another bento).
    """
    from mlcycle.tasks import stack

    cfg = settings.serving
    stack.stop_service(settings, SERVICE_NAME)
    port = port if port is not None else cfg.port
    port = port or free_port(cfg.host)
    check_port_free(cfg.host, port)
    argv = [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", cfg.host, "--port", str(port),
            "--do-not-track"]
    try:
        return stack.start_service(settings, SERVICE_NAME, argv, url=f"http://{cfg.host}:{port}",
                                   health_url=f"http://{cfg.host}:{port}/readyz",
                                   timeout=cfg.readiness_timeout_seconds,
                                   env=bentoml_env(settings, bento_tag=bento_tag))
    except stack.StackError as exc:
        raise ServeFailed(str(exc)) from None


# --------------------------------------------------------------------------------------------------
# Prefect tasks: thin wrappers (flows/package.py)
# --------------------------------------------------------------------------------------------------

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402


@task(name="import-model", cache_policy=NO_CACHE)
def import_model_task(settings: Settings, ref: int | str = "champion") -> PackagedModel:
    from mlcycle.tasks.storage import open_store

    return import_model(open_store(settings), settings, ref)


@task(name="build-bento", cache_policy=NO_CACHE)
def build_bento_task(settings: Settings, model: PackagedModel) -> BentoRef:
    return build_bento(settings, model)


@task(name="test-serve", cache_policy=NO_CACHE)
def verify_serving_task(settings: Settings, bento: BentoRef) -> ServingCheck:
    from mlcycle.tasks.storage import open_store

    return verify_serving(open_store(settings), settings, bento)
