"""Model versions: their keys, and every verified read (seals, metadata, models, the champion pointer).

Invariants:

* **Registration** (claim, write under the claim, seal) is in ``registration.py``, which imports this
  module; what it guarantees readers: only sealed versions exist, and a seal's bytes never change.
* **Verified loads.** Loading reads the seal, checks ``metadata.json`` against it, then
  ``model.joblib`` against the metadata, all *before* unpickling. A joblib file is code: the
  registry only ever unpickles bytes whose sha256 it recorded itself. Through an alias, the alias's
  own record of both hashes is checked too, so swapping a version's metadata is detected.

Reading the champion pointer (:func:`read_alias`) is here, not in ``aliases.py``: every read resolves
``champion`` or ``previous`` to a version (:func:`resolve`), and ``aliases.py``, which moves the
pointer, imports this module (never the reverse).
"""

from __future__ import annotations

import datetime as dt
import io
import json
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from mlcycle.tasks.features import model_input
from mlcycle.tasks.predictions import model_scores
from mlcycle.tasks.profile import PROFILE_FILE, ReferenceProfile
from mlcycle.tasks.records.registry import (
    LISTED_METRICS,
    AliasPointer,
    AliasTarget,
    EvaluationReport,
    ModelVersion,
    VersionListing,
    VersionSeal,
)
from mlcycle.tasks.settings import Settings
from mlcycle.tasks.storage import (
    IntegrityError,
    ObjectNotFound,
    ObjectStore,
    check_segment,
    get_verified,
)

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"

Ref = int | str  # a version number, or "champion" / "previous"


class RegistryError(RuntimeError):
    """A registry operation could not be done; the message says which model and version."""


class ModelNotFound(RegistryError, LookupError):
    """No such model, version or alias."""


@dataclass
class LoadedModel:
    """A verified model: its metadata and the fitted pipeline."""

    metadata: ModelVersion
    pipeline: Any

    @property
    def version(self) -> int:
        return self.metadata.version

    def predict_proba(self, frame) -> Any:
        """Probability of the positive label for each row of ``frame`` (extra columns are ignored); binary."""
        return self.pipeline.predict_proba(model_input(frame, self.metadata.features))[:, 1]

    def predictions(self, frame) -> Any:
        """The model's output for each row of ``frame``, per task (tasks/features.py: predictions)."""
        return model_scores(self.pipeline, model_input(frame, self.metadata.features), self.metadata.task,
                           self.metadata.classes)


# --------------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------------


def model_name(settings: Settings) -> str:
    """The registry name of the project's model: ``training.model_name``, else ``<dataset>-<target>``."""
    return settings.training.model_name or f"{settings.dataset.name}-{settings.dataset.target}"


def model_root(name: str) -> str:
    return f"models/{check_segment(name, 'model name')}/"


def version_prefix(name: str, version: int) -> str:
    return f"{model_root(name)}{int(version)}/"


def claim_key(name: str, version: int) -> str:
    return f"{model_root(name)}versions/{int(version)}.claim"


def seal_key(name: str, version: int) -> str:
    return f"{model_root(name)}versions/{int(version)}.json"


def alias_key(name: str) -> str:
    return f"{model_root(name)}aliases/champion.json"


def staging_prefix(name: str, token: str) -> str:
    return f"{model_root(name)}staging/{check_segment(token, 'staging token')}/"


def record_bytes(record: BaseModel) -> bytes:
    """A record as the registry stores it: JSON, keys sorted (seals, reports, the alias pointer, events)."""
    return json.dumps(record.model_dump(mode="json"), indent=1, sort_keys=True).encode()


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------------
# reading, verified
# --------------------------------------------------------------------------------------------------


def read_seal(store: ObjectStore, name: str, version: int) -> VersionSeal:
    key = seal_key(name, version)
    try:
        raw = store.get_bytes(key)
    except ObjectNotFound:
        known = [v for v in sealed_versions(store, name)]
        raise ModelNotFound(f"model {name!r} has no version {version}"
                            + (f"; versions are {known}" if known else "; it has no versions yet")) from None
    try:
        seal = VersionSeal.model_validate_json(raw)
    except ValidationError:
        raise IntegrityError(f"{store.uri(key)} is corrupted: not a version seal") from None
    if seal.version != version or seal.name != name:
        raise IntegrityError(f"{store.uri(key)} seals {seal.name!r} v{seal.version}, not {name!r} v{version}")
    return seal


def sealed_versions(store: ObjectStore, name: str) -> list[int]:
    prefix = f"{model_root(name)}versions/"
    out = []
    for key in store.list(prefix):
        stem, _, ext = key[len(prefix):].partition(".")
        if ext == "json" and stem.isdigit():
            out.append(int(stem))
    return sorted(out)


def read_alias(store: ObjectStore, name: str) -> AliasPointer | None:
    """The champion pointer, or None when no version was ever promoted."""
    key = alias_key(name)
    try:
        raw = store.get_bytes(key)
    except ObjectNotFound:
        return None
    try:
        return AliasPointer.model_validate_json(raw)
    except ValidationError:
        raise IntegrityError(f"{store.uri(key)} is corrupted: not an alias pointer") from None


def resolve(store: ObjectStore, name: str, ref: Ref) -> AliasTarget:
    """A version number, ``champion`` or ``previous`` -> the version with the hashes to expect."""
    return _resolve_sealed(store, name, ref)[0]


def metadata_key(seal: VersionSeal) -> str:
    """Where the metadata a seal seals is: the attempt folder it names (seals from before attempts: the
    version's own folder); a seal pointing outside its version is refused."""
    key = seal.metadata_key or version_prefix(seal.name, seal.version) + METADATA_FILE
    if not key.startswith(version_prefix(seal.name, seal.version)):
        raise IntegrityError(f"the seal of model {seal.name!r} v{seal.version} points outside its version: {key!r}")
    return key


def _resolve_sealed(store: ObjectStore, name: str, ref: Ref) -> tuple[AliasTarget, VersionSeal]:
    """:func:`resolve`, and the seal it read (so a load reads each seal once)."""
    if isinstance(ref, str) and ref in ("champion", "previous"):
        pointer = read_alias(store, name)
        target = pointer if ref == "champion" else (pointer.previous if pointer else None)
        if target is None:
            raise ModelNotFound(f"model {name!r} has no {ref}" + ("" if pointer else ": nothing was promoted yet"))
        seal = read_seal(store, name, target.version)
        if (seal.metadata_sha256, seal.model_sha256) != (target.metadata_sha256, target.model_sha256):
            raise IntegrityError(
                f"alias {ref} of model {name!r} records v{target.version} with metadata sha256 "
                f"{target.metadata_sha256[:16]} and model sha256 {target.model_sha256[:16]}, but the version's "
                f"seal says {seal.metadata_sha256[:16]} / {seal.model_sha256[:16]}: the version was altered")
        return AliasTarget(version=target.version, model_sha256=target.model_sha256,
                           metadata_sha256=target.metadata_sha256), seal
    version = parse_version(ref)
    seal = read_seal(store, name, version)
    return AliasTarget(version=version, model_sha256=seal.model_sha256, metadata_sha256=seal.metadata_sha256), seal


def parse_version(ref: Ref) -> int:
    if isinstance(ref, int) and not isinstance(ref, bool) and ref >= 1:
        return ref
    if isinstance(ref, str) and ref.isascii() and ref.isdigit() and int(ref) >= 1:
        return int(ref)
    raise ModelNotFound(f"{ref!r} is not a model version: give a version number (1, 2, ...), 'champion' or "
                        "'previous'")


def load_metadata(store: ObjectStore, name: str, ref: Ref = "champion") -> ModelVersion:
    """A version's metadata, verified against its seal (and its alias, when loaded through one)."""
    target, seal = _resolve_sealed(store, name, ref)
    key = metadata_key(seal)
    metadata = ModelVersion.model_validate_json(get_verified(store, key, target.metadata_sha256))
    if metadata.model_sha256 != target.model_sha256 or metadata.version != target.version:
        raise IntegrityError(f"{store.uri(key)} does not describe the sealed model v{target.version}")
    return metadata


def load_model(store: ObjectStore, name: str, ref: Ref = "champion") -> LoadedModel:
    """The verified pipeline: refuses (IntegrityError) any byte the registry did not record, before unpickling."""
    import joblib

    metadata = load_metadata(store, name, ref)
    data = get_verified(store, metadata.artifacts[MODEL_FILE].key, metadata.model_sha256)
    return LoadedModel(metadata=metadata, pipeline=joblib.load(io.BytesIO(data)))


def load_profile(store: ObjectStore, name: str, ref: Ref = "champion") -> ReferenceProfile:
    """The reference profile stored with a version, verified against its metadata."""
    metadata = load_metadata(store, name, ref)
    record = metadata.artifacts.get(PROFILE_FILE)
    if record is None:
        raise ModelNotFound(f"model {name!r} v{metadata.version} has no {PROFILE_FILE}")
    return ReferenceProfile.model_validate_json(get_verified(store, record.key, record.sha256))


def load_evaluation(store: ObjectStore, name: str, ref: Ref = "champion") -> EvaluationReport:
    metadata = load_metadata(store, name, ref)
    record = metadata.artifacts["evaluation.json"]
    return EvaluationReport.model_validate_json(get_verified(store, record.key, record.sha256))


def list_versions(store: ObjectStore, name: str, metrics: tuple[str, ...] | None = None) -> list[VersionListing]:
    """Every sealed version, newest first, with its aliases and test metrics (default: its task's
    ``LISTED_METRICS``, tasks/records/registry.py); a damaged version is listed with its problem."""
    pointer = None
    with suppress(IntegrityError):
        pointer = read_alias(store, name)
    aliases: dict[int, list[str]] = {}
    if pointer is not None:
        aliases.setdefault(pointer.version, []).append("champion")
        if pointer.previous is not None:
            aliases.setdefault(pointer.previous.version, []).append("previous")
    out = []
    for version in reversed(sealed_versions(store, name)):
        try:
            meta = load_metadata(store, name, version)
        except (IntegrityError, ObjectNotFound, ModelNotFound, ValidationError) as exc:
            out.append(VersionListing(version=version, aliases=aliases.get(version, []),
                                      status=f"damaged: {str(exc).splitlines()[0]}"))
            continue
        out.append(VersionListing(
            version=version, created_at=meta.created_at, family=meta.family,
            metrics={m: meta.metrics.get(m) for m in metrics or LISTED_METRICS[meta.metrics.task]},
            gate="promote" if meta.gate.promote else "refused", aliases=aliases.get(version, []),
        ))
    return out
