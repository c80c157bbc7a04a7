"""Packaging: a registry version into BentoML's model store, and the serving bento built around it.

::

    import_model    registry version (sha256-verified) -> a BentoML model: the exact model.joblib, plus
                    served_model.json (version, sha256, threshold, dataset declaration, lineage summary);
                    labels carry the registry version and sha256, so `bentoml models list` says what it is
    build_bento     `bentoml build -f bentos/bentofile.yaml` (pinned serving requirements, no Prefect) from a
                    staged copy of the files the bentofile lists, laid out as they are imported; the bento's
                    version is v<registry version>-<hash of model + sources>, its labels name the model;
                    building the same thing twice reuses the existing bento

Every BentoML call runs with ``BENTOML_HOME`` = ``serving.bentoml_home`` (default ``<home>/bentoml``), so
the user's ~/bentoml is never touched; every subprocess gets that environment from :func:`bentoml_env`.
With ``api_token`` set, a service started from here gets it in its environment (never in the bento).

Prefect appears only in the thin ``@task`` wrappers at the bottom; the registry and training modules are
imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlcycle.tasks.records.serving import BentoRef, PackagedModel
from mlcycle.tasks.schema import LineageSummary, ServedModel
from mlcycle.tasks.settings import Settings, config_path
from mlcycle.tasks.storage import ObjectStore

ROOT = Path(__file__).resolve().parents[2]
BENTOFILE = ROOT / "bentos" / "bentofile.yaml"
SERVED_MODEL_FILE = "served_model.json"


class ServingError(RuntimeError):
    """Packaging or test-serving failed; the message says which step and why."""


class BuildFailed(ServingError):
    """`bentoml build` failed; the message ends with the tail of its output."""


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
        "MLCYCLE_STORE_PREFIX": settings.store_scope,
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


# --------------------------------------------------------------------------------------------------
# registry -> BentoML model
# --------------------------------------------------------------------------------------------------


def model_store(settings: Settings):
    """BentoML's model store under :func:`bentoml_home`, for the ``_model_store`` argument of ``bentoml.models``.

    The one name taken from ``bentoml._internal``, on purpose: BentoML 1.4's public model API
    (``bentoml.models.create``, ``get``, ``delete``, ``BentoModel.stored``) finds its store through a
    process-wide singleton that ``BENTOML_HOME`` fixes the first time BentoML touches a store, and
    offers no public way to name another one. mlcycle keeps one BentoML home per settings
    (``serving.bentoml_home``, default ``<home>/bentoml``), one process may work with several (every
    test home of a test session), and a library must not set ``BENTOML_HOME`` for the rest of its
    caller's process. The public functions take the store as their ``_model_store`` argument.
    """
    from bentoml._internal.models import ModelStore

    path = bentoml_home(settings) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return ModelStore(path)


def save_bento_model(settings: Settings, tag: str, files: dict[str, bytes], *, labels: dict[str, str] | None = None,
                     metadata: dict[str, Any] | None = None) -> str:
    """Create the BentoML model ``tag`` holding ``files`` (name -> content) in our store; its folder."""
    import bentoml

    store = model_store(settings)
    with bentoml.models.create(tag, labels=labels, metadata=metadata, _model_store=store) as model:
        for name, data in files.items():
            Path(model.path_of(name)).write_bytes(data)
    return bentoml.models.get(tag, _model_store=store).path


def bento_model_tag(name: str, version: int, model_sha256: str) -> str:
    return f"{name.lower()}:v{version}-{model_sha256[:12]}"


def served_model_from(metadata, spec, registry_uri: str) -> ServedModel:
    """What the service needs to know about a registry version (tasks.registry.ModelVersion): its identity, its
    input, and what it predicts (the dataset declaration's task, classes and positive label)."""
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
    if metadata.task != spec.task:
        raise ServingError(f"{metadata.name} v{metadata.version} was trained for a {metadata.task} task, the dataset "
                           f"now declares {spec.task}; retrain before packaging")
    classes = metadata.classes or spec.class_labels  # versions from before tasks recorded no classes: binary
    if spec.task == "multiclass" and classes != spec.class_labels:
        raise ServingError(f"{metadata.name} v{metadata.version} predicts the classes {classes}, the dataset now "
                           f"declares {spec.class_labels}; retrain before packaging")
    lineage = metadata.lineage
    return ServedModel(
        name=metadata.name, version=metadata.version, model_sha256=metadata.model_sha256,
        threshold=metadata.threshold, task=spec.task, classes=classes,
        positive_label=(metadata.positive_label or spec.positive_label) if spec.task == "binary" else None,
        features=names, dataset=spec, registry_uri=registry_uri,
        lineage=LineageSummary(
            dataset=lineage.dataset, dataset_schema_hash=lineage.dataset_schema_hash, window=lineage.window,
            partitions=[p.date.isoformat() for p in lineage.partitions], code_version=lineage.code_version,
            trained_at=metadata.created_at, family=metadata.family,
            metrics=metadata.metrics.values(),  # the task's own
            gate=metadata.gate.summary[:500],
        ),
    )


def import_model(store: ObjectStore, settings: Settings, ref: int | str = "champion") -> PackagedModel:
    """Copy a registry version (verified) into the BentoML model store; reuse an intact earlier import."""
    import bentoml
    from bentoml.exceptions import NotFound

    from mlcycle.tasks.registry.versions import MODEL_FILE, load_metadata, model_name, version_prefix
    from mlcycle.tasks.storage import get_verified, sha256_file

    name = model_name(settings)
    metadata = load_metadata(store, name, ref)  # ModelNotFound / IntegrityError name the problem
    data = get_verified(store, metadata.artifacts[MODEL_FILE].key, metadata.model_sha256)
    served = served_model_from(metadata, settings.dataset, store.uri(version_prefix(name, metadata.version)))
    tag = bento_model_tag(name, metadata.version, metadata.model_sha256)
    models = model_store(settings)
    try:
        existing = bentoml.models.get(tag, _model_store=models)
    except NotFound:
        existing = None
    if existing is not None:
        model_file = Path(existing.path_of(MODEL_FILE))
        if model_file.is_file() and sha256_file(model_file) == metadata.model_sha256 and \
                Path(existing.path_of(SERVED_MODEL_FILE)).is_file():
            return PackagedModel(tag=tag, name=name, version=metadata.version, model_sha256=metadata.model_sha256,
                                 path=existing.path, imported=False)
        bentoml.models.delete(tag, _model_store=models)  # a damaged copy: import it again
    labels = {"source": "mlcycle-registry", "model_name": name, "model_version": str(metadata.version),
              "registry_version": str(metadata.version), "model_sha256": metadata.model_sha256,
              "family": metadata.family, "dataset_schema_hash": metadata.lineage.dataset_schema_hash,
              "code_version": metadata.lineage.code_version}
    info = {"registry_uri": served.registry_uri, "model_sha256": metadata.model_sha256,
            "threshold": metadata.threshold, "window": metadata.lineage.window, "features": served.features,
            "trained_at": metadata.created_at.isoformat(), "partitions": served.lineage.partitions,
            "metrics": {k: v for k, v in served.lineage.metrics.items() if v is not None}}  # BentoML refuses None
    path = save_bento_model(settings, tag, {MODEL_FILE: data,
                                            SERVED_MODEL_FILE: served.model_dump_json(indent=1).encode()},
                            labels=labels, metadata=info)
    return PackagedModel(tag=tag, name=name, version=metadata.version, model_sha256=metadata.model_sha256,
                         path=path, imported=True)


# --------------------------------------------------------------------------------------------------
# the bento
# --------------------------------------------------------------------------------------------------


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
        raise BuildFailed(f"bentoml build of {tag} failed (exit code {result.returncode}): {output_tail(output)}")
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
                          f"output tail: {output_tail((exc.stdout or b'').decode(errors='replace'))}") from None


def output_tail(text: str, chars: int = 1500) -> str:
    """The last ``chars`` characters of a tool's output (what an error message quotes)."""
    text = text.strip()
    return text if len(text) <= chars else "..." + text[-chars:]


# --------------------------------------------------------------------------------------------------
# Prefect tasks: thin wrappers (flows/package.py)
# --------------------------------------------------------------------------------------------------

from mlcycle.tasks.lazy_task import NO_CACHE, task  # noqa: E402


@task(name="import-model", cache_policy=NO_CACHE)
def import_model_task(settings: Settings, ref: int | str = "champion") -> PackagedModel:
    from mlcycle.tasks.storage import open_store

    return import_model(open_store(settings), settings, ref)


@task(name="build-bento", cache_policy=NO_CACHE)
def build_bento_task(settings: Settings, model: PackagedModel) -> BentoRef:
    return build_bento(settings, model)
