"""Model versions: claiming a number, writing and sealing a version, and every verified read.

Invariants:

* **Versions never repeat.** A registration claims ``versions/<n>.claim`` with the store's exclusive
  create (``os.link`` locally, ``If-None-Match: *`` on S3); concurrent registrations get distinct
  numbers, and a number whose registration failed is never reused.
* **No half version.** Artifacts are written first, ``metadata.json`` next, and the seal last (also
  exclusively). A version exists only once sealed: a crash or a store fault mid-registration leaves
  only an invisible claim.
* **One version per training run.** A claim records the flow run that made it. When that same flow run
  registers again (a Prefect task retry after a store fault, or the run retried after its process was
  killed), it finishes its own claimed version instead of claiming another, and gets its sealed
  version back if the seal was already written (e.g. the reply was lost): retries never duplicate.
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
from mlcycle.tasks.lazy_task import NO_CACHE, task
from mlcycle.tasks.predictions import model_scores
from mlcycle.tasks.profile import PROFILE_FILE, ReferenceProfile
from mlcycle.tasks.records.evaluation import GateDecision
from mlcycle.tasks.records.registry import (
    LISTED_METRICS,
    AliasPointer,
    AliasTarget,
    ArtifactRecord,
    EvaluationReport,
    Lineage,
    ModelDraft,
    ModelVersion,
    VersionListing,
    VersionSeal,
)
from mlcycle.tasks.records.training import Candidate, Comparison
from mlcycle.tasks.registry.lineage import code_version, environment
from mlcycle.tasks.registry.report import evaluation_report, render_report
from mlcycle.tasks.storage import (
    IntegrityError,
    ObjectNotFound,
    ObjectStore,
    check_segment,
    delete_prefix,
    get_verified,
    open_store,
    sha256_bytes,
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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------------


def allocate_version(store: ObjectStore, name: str, note: str = "", *, flow_run_id: str | None = None,
                     staging: str | None = None) -> int:
    """Claim the next free version number; concurrent callers get distinct numbers.

    The claim records ``flow_run_id`` and the ``staging`` prefix it registers from, so a retry of the
    same run can find and finish it (:func:`run_claim`).
    """
    prefix = f"{model_root(name)}versions/"
    taken = [int(k[len(prefix):].split(".")[0]) for k in store.list(prefix)
             if k[len(prefix):].split(".")[0].isdigit()]
    version = max(taken, default=0) + 1
    claim = json.dumps({"claimed_at": _now().isoformat(), "note": note, "flow_run_id": flow_run_id,
                        "staging": staging}).encode()
    for _ in range(10_000):
        if store.create_exclusive(claim_key(name, version), claim):
            return version
        version += 1
    raise RegistryError(f"could not claim a version number for model {name!r}")


def write_version(store: ObjectStore, draft: ModelDraft, version: int, artifacts: dict[str, bytes]) -> ModelVersion:
    """Write a claimed version: artifacts, then metadata.json, then the seal that makes it visible."""
    if MODEL_FILE not in artifacts:
        raise RegistryError(f"a version needs {MODEL_FILE}; got {sorted(artifacts)}")
    prefix = version_prefix(draft.name, version)
    records = {}
    for rel, data in artifacts.items():
        info = store.put_bytes(prefix + rel, data)
        records[rel] = ArtifactRecord(key=info.key, sha256=info.sha256, bytes=info.size)
    metadata = ModelVersion(**dict(draft), version=version, created_at=_now(),
                            model_sha256=records[MODEL_FILE].sha256, artifacts=records)
    payload = metadata.to_json_bytes()
    store.put_bytes(prefix + METADATA_FILE, payload)
    seal = VersionSeal(name=draft.name, version=version, metadata_sha256=sha256_bytes(payload),
                       model_sha256=metadata.model_sha256, sealed_at=_now())
    if not store.create_exclusive(seal_key(draft.name, version), record_bytes(seal)):
        raise RegistryError(f"model {draft.name!r} version {version} was sealed by another writer; its claim "
                            f"{store.uri(claim_key(draft.name, version))} was not respected")
    return metadata


def run_claim(store: ObjectStore, name: str, flow_run_id: str) -> tuple[int, dict] | None:
    """The newest version claimed by ``flow_run_id`` and its claim record, or None."""
    prefix = f"{model_root(name)}versions/"
    claims = sorted((int(k[len(prefix):-len(".claim")]), k) for k in store.list(prefix)
                    if k.endswith(".claim") and k[len(prefix):-len(".claim")].isdigit())
    for version, key in reversed(claims):
        try:
            record = json.loads(store.get_bytes(key))
        except (ObjectNotFound, ValueError):
            continue
        if isinstance(record, dict) and record.get("flow_run_id") == flow_run_id:
            return version, record
    return None


def register_candidate(store: ObjectStore, candidate: Candidate, comparison: Comparison, decision: GateDecision,
                       *, flow_run_id: str | None = None) -> ModelVersion:
    """Register a staged challenger with its evaluation report and gate decision, then drop the staging.

    Idempotent per flow run: a retry of the run that already claimed a version finishes that version
    (or returns it, once sealed) and drops the staging its interrupted attempt left behind.
    """
    name = candidate.model_name
    earlier = run_claim(store, name, flow_run_id) if flow_run_id else None
    if earlier is not None and store.exists(seal_key(name, earlier[0])):
        _drop_staging(store, candidate.staging_prefix, earlier[1].get("staging"))
        return load_metadata(store, name, earlier[0])
    python, libraries, system = environment()
    commit, dirty = code_version()
    draft = ModelDraft(
        name=candidate.model_name, family=candidate.family, estimator=candidate.estimator,
        params=candidate.params, seed=candidate.seed, threshold=candidate.threshold, task=candidate.task,
        classes=candidate.classes, positive_label=candidate.positive_label, features=candidate.features,
        search=candidate.search, metrics=candidate.scores.overall, slices=candidate.scores.slices, gate=decision,
        lineage=Lineage(
            dataset=candidate.dataset, dataset_schema_hash=candidate.dataset_schema_hash,
            partitions=candidate.window.partitions, window=candidate.window.requested, split=candidate.split,
            code_version=commit, code_dirty=dirty, python=python, libraries=libraries, platform=system,
            flow_run_id=flow_run_id,
        ),
    )
    staged = {**candidate.artifacts, **comparison.artifacts}
    artifacts = {rel: get_verified(store, a.key, a.sha256) for rel, a in staged.items()}
    if earlier is not None:  # this run's own claim, from an attempt that did not get to seal it
        version = earlier[0]
    else:
        version = allocate_version(store, name, note=f"flow run {flow_run_id}", flow_run_id=flow_run_id,
                                   staging=candidate.staging_prefix)
    plots = sorted(rel for rel in artifacts if rel.startswith("plots/"))
    report = evaluation_report(candidate, comparison, decision, version, plots)
    artifacts["evaluation.json"] = record_bytes(report)
    artifacts["report.md"] = render_report(report, {p: p for p in plots}).encode()
    metadata = write_version(store, draft, version, artifacts)
    _drop_staging(store, candidate.staging_prefix, earlier[1].get("staging") if earlier else None)
    return metadata


def _drop_staging(store: ObjectStore, *prefixes: str | None) -> None:
    """Remove staged candidates once registered; leftovers under staging/ are invisible, so best effort."""
    for prefix in dict.fromkeys(p for p in prefixes if p):
        parts = prefix.split("/")  # models/<name>/staging/<token>/ and nothing else
        if len(parts) == 5 and parts[0] == "models" and parts[2] == "staging" and parts[4] == "":
            with suppress(Exception):
                delete_prefix(store, prefix)


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
                           metadata_sha256=target.metadata_sha256)
    version = parse_version(ref)
    seal = read_seal(store, name, version)
    return AliasTarget(version=version, model_sha256=seal.model_sha256, metadata_sha256=seal.metadata_sha256)


def parse_version(ref: Ref) -> int:
    if isinstance(ref, int) and not isinstance(ref, bool) and ref >= 1:
        return ref
    if isinstance(ref, str) and ref.isascii() and ref.isdigit() and int(ref) >= 1:
        return int(ref)
    raise ModelNotFound(f"{ref!r} is not a model version: give a version number (1, 2, ...), 'champion' or "
                        "'previous'")


def load_metadata(store: ObjectStore, name: str, ref: Ref = "champion") -> ModelVersion:
    """A version's metadata, verified against its seal (and its alias, when loaded through one)."""
    target = resolve(store, name, ref)
    key = version_prefix(name, target.version) + METADATA_FILE
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


# --------------------------------------------------------------------------------------------------
# Prefect task: thin wrapper
# --------------------------------------------------------------------------------------------------


@task(name="register-model", cache_policy=NO_CACHE)
def register_task(settings, candidate: Candidate, comparison: Comparison, decision: GateDecision,
                  flow_run_id: str | None = None) -> ModelVersion:
    return register_candidate(open_store(settings), candidate, comparison, decision, flow_run_id=flow_run_id)
