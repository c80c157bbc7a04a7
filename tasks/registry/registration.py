"""Registering a model version: claim a number first, write under that claim, seal last.

* **Versions never repeat.** A registration claims ``versions/<n>.claim`` with the store's exclusive
  create (``os.link`` locally, ``If-None-Match: *`` on S3); concurrent registrations get distinct
  numbers, and a number whose registration failed is never reused.
* **Claim first, write under the claim, seal last.** A registration claims its number before it
  writes anything; artifacts go under that claim's folder, ``metadata.json`` next, and the seal last
  (exclusively, naming the metadata it seals). A version exists only once sealed: a crash or a store
  fault mid-registration leaves only an invisible claim and unreachable files (``mlcycle gc`` sweeps them).
* **One version per training run, and no writer ever touches a sealed version.** A claim records the
  flow run that made it. When that same flow run registers again (a Prefect task retry after a store
  fault, or the run retried after its process was killed), it gets its sealed version back if the seal
  was written, and otherwise *takes the claim over*: a conditional replace of the claim record bumps its
  ``attempt``, and attempt k writes into ``models/<name>/<n>/attempt-<k>/``, never where an earlier
  attempt (perhaps not dead, only frozen) may still be writing. Whichever attempt seals first wins; the
  other's exclusive seal fails (:class:`VersionSealedMeanwhile`), so it returns the sealed version and
  nothing it wrote is reachable. Two takeovers at once: one wins the replace, the other stops
  (``RegistryError``, retried by the task).

Reading versions (seals, metadata, models, the champion pointer) is in ``versions.py``; this module
imports it, never the reverse.
"""

from __future__ import annotations

import json
from contextlib import suppress

from mlcycle.tasks.lazy_task import NO_CACHE, task
from mlcycle.tasks.records.evaluation import GateDecision
from mlcycle.tasks.records.registry import ArtifactRecord, Lineage, ModelDraft, ModelVersion, VersionSeal
from mlcycle.tasks.records.training import Candidate, Comparison
from mlcycle.tasks.registry.lineage import code_version, environment
from mlcycle.tasks.registry.report import evaluation_report, render_report
from mlcycle.tasks.registry.versions import (
    METADATA_FILE,
    MODEL_FILE,
    RegistryError,
    claim_key,
    load_metadata,
    model_root,
    now_utc,
    record_bytes,
    seal_key,
    version_prefix,
)
from mlcycle.tasks.storage import ObjectNotFound, ObjectStore, delete_prefix, get_verified, open_store, sha256_bytes


class VersionSealedMeanwhile(RegistryError):
    """Another attempt sealed the version this attempt was writing; what this attempt wrote is unreachable."""


def allocate_version(store: ObjectStore, name: str, note: str = "", *, flow_run_id: str | None = None,
                     staging: str | None = None) -> int:
    """Claim the next free version number; concurrent callers get distinct numbers.

    The claim records ``flow_run_id`` and the ``staging`` prefix it registers from, so a retry of the
    same run can find and finish it (:func:`run_claim`); ``attempt`` 0 writes at the version's own folder.
    """
    prefix = f"{model_root(name)}versions/"
    taken = [int(k[len(prefix):].split(".")[0]) for k in store.list(prefix)
             if k[len(prefix):].split(".")[0].isdigit()]
    version = max(taken, default=0) + 1
    claim = json.dumps({"claimed_at": now_utc().isoformat(), "note": note, "flow_run_id": flow_run_id,
                        "staging": staging, "attempt": 0}).encode()
    for _ in range(10_000):
        if store.create_exclusive(claim_key(name, version), claim):
            return version
        version += 1
    raise RegistryError(f"could not claim a version number for model {name!r}")


def attempt_prefix(name: str, version: int, attempt: int) -> str:
    """Where attempt ``attempt`` of a claimed version writes: the version's folder for the first one."""
    return version_prefix(name, version) + ("" if attempt == 0 else f"attempt-{int(attempt)}/")


def take_over_claim(store: ObjectStore, name: str, version: int, flow_run_id: str) -> int:
    """Take this run's own unsealed claim over for a new attempt; returns the attempt number to write as.

    Conditional: the claim record is replaced only if unchanged since read, so of two retries at once one
    gets the attempt and the other gets ``RegistryError`` (its task retries, and finds the claim newer).
    """
    key = claim_key(name, version)
    seen = store.read_tagged(key)
    record = json.loads(seen.data)
    if record.get("flow_run_id") != flow_run_id:
        raise RegistryError(f"{store.uri(key)} is not a claim of flow run {flow_run_id}")
    attempt = int(record.get("attempt") or 0) + 1
    updated = json.dumps({**record, "attempt": attempt, "taken_over_at": now_utc().isoformat()}).encode()
    if not store.replace_if(key, updated, seen.tag):
        raise RegistryError(f"model {name!r} v{version}: another attempt of flow run {flow_run_id} took the claim "
                            f"{store.uri(key)} over at the same time; retry")
    return attempt


def write_version(store: ObjectStore, draft: ModelDraft, version: int, artifacts: dict[str, bytes],
                  *, attempt: int = 0) -> ModelVersion:
    """Write a claimed version under its attempt's folder: artifacts, then metadata.json, then the seal.

    Raises :class:`VersionSealedMeanwhile` if another attempt sealed the version first (this attempt's files
    are then unreachable: nothing points at them).
    """
    if MODEL_FILE not in artifacts:
        raise RegistryError(f"a version needs {MODEL_FILE}; got {sorted(artifacts)}")
    prefix = attempt_prefix(draft.name, version, attempt)
    records = {}
    for rel, data in artifacts.items():
        info = store.put_bytes(prefix + rel, data)
        records[rel] = ArtifactRecord(key=info.key, sha256=info.sha256, bytes=info.size)
    metadata = ModelVersion(**dict(draft), version=version, created_at=now_utc(),
                            model_sha256=records[MODEL_FILE].sha256, artifacts=records)
    payload = metadata.to_json_bytes()
    store.put_bytes(prefix + METADATA_FILE, payload)
    seal = VersionSeal(name=draft.name, version=version, metadata_sha256=sha256_bytes(payload),
                       model_sha256=metadata.model_sha256, sealed_at=now_utc(), metadata_key=prefix + METADATA_FILE)
    if not store.create_exclusive(seal_key(draft.name, version), record_bytes(seal)):
        raise VersionSealedMeanwhile(f"model {draft.name!r} version {version} was sealed by another writer "
                                     f"before this attempt ({store.uri(prefix)}) could seal it")
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
        calibration=candidate.calibration,
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
        attempt = take_over_claim(store, name, version, flow_run_id)
    else:
        version = allocate_version(store, name, note=f"flow run {flow_run_id}", flow_run_id=flow_run_id,
                                   staging=candidate.staging_prefix)
        attempt = 0
    plots = sorted(rel for rel in artifacts if rel.startswith("plots/"))
    report = evaluation_report(candidate, comparison, decision, version, plots)
    artifacts["evaluation.json"] = record_bytes(report)
    artifacts["report.md"] = render_report(report, {p: p for p in plots}).encode()
    try:
        metadata = write_version(store, draft, version, artifacts, attempt=attempt)
    except VersionSealedMeanwhile:
        if earlier is None:  # a fresh claim is ours alone: someone ignored it
            raise
        metadata = load_metadata(store, name, version)  # the earlier attempt of this run finished first
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
# Prefect task: a thin wrapper (flows/train.py)
# --------------------------------------------------------------------------------------------------


@task(name="register-model", cache_policy=NO_CACHE)
def register_task(settings, candidate: Candidate, comparison: Comparison, decision: GateDecision,
                  flow_run_id: str | None = None) -> ModelVersion:
    return register_candidate(open_store(settings), candidate, comparison, decision, flow_run_id=flow_run_id)
