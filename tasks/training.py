"""Training a challenger: the window of validated days, the time split, the search, the test scores.

The path of one training run (plain functions; the ``@task`` wrappers at the bottom are what
``flows/train.py`` calls)::

    select_window      the last N validated days (or an explicit range): PartitionRefs, never frames
    train_challenger   load those partitions (sha256-verified) -> time split -> hyper-parameter search
                       -> scores on the test window (overall and per slice) -> permutation importance
                       -> reference profile; stages model + predictions + profile under
                       models/<name>/staging/<token>/ and returns a typed Candidate
    compare_with_champion   the champion (sha256-verified) on the *same* test rows, the paired
                       bootstrap of the improvement, ROC and calibration plots

Contracts:

* **Only validated data.** Partitions come from ``validated/`` manifests; quarantined days are not in
  that zone and cannot enter. Every data file is verified against its manifest's sha256 on read.
* **Time split, no leakage.** Rows are sorted by the timestamp column; the latest days of the window
  are the test window, the days before them validation, the rest training
  (``training.validation_fraction`` / ``test_fraction`` of the window's days, at least one day each).
  Boundaries are UTC midnights, so ``max(train) < min(validation)`` and ``max(validation) <
  min(test)`` hold by construction and are asserted anyway.
* **Search.** ``RandomizedSearchCV`` (or ``HalvingRandomSearchCV``) over the family's space. With
  ``cv: holdout`` candidates are fitted on the training window and scored on the validation window;
  with ``cv: time_series`` on expanding time folds of both. The best candidate is refitted on training
  + validation: that fitted pipeline is what is scored on the test window, registered and served.
* **Reproducible.** The search's sampler and the estimator take the seed, each candidate's fit is
  independent of the others, so the same seed and data give the same model and metrics whatever the
  number of joblib workers or the backend (loky, threading, or a Dask cluster).
* **Bad input fails early, by name.** No validated data, a window with no partitions, too few rows or a
  single class in a split raise :class:`TrainingDataError`; an unknown family or parameter a
  :class:`~tasks.settings.ConfigError`.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from mlcycle.tasks.evaluation import (
    BootstrapResult,
    FeatureImportance,
    ModelScores,
    calibration_plot,
    importance_plot,
    paired_bootstrap,
    permutation_importances,
    roc_plot,
    score_model,
)
from mlcycle.tasks.features import (
    InputColumn,
    build_pipeline,
    input_schema,
    model_input,
    resolve_family,
    search_distributions,
    training_features,
)
from mlcycle.tasks.partitions import list_partitions, read_manifest, read_partition
from mlcycle.tasks.records.data import PartitionRef
from mlcycle.tasks.settings import ConfigError, DatasetSpec, Settings, TrainingSettings
from mlcycle.tasks.storage import ObjectStore, get_verified

SCORERS = {"roc_auc": "roc_auc", "pr_auc": "average_precision", "log_loss": "neg_log_loss",
           "brier": "neg_brier_score"}
_PARTITION_COL = "__partition__"


class TrainingDataError(ValueError):
    """The data cannot train a model: no validated partitions, too few rows, a single class..."""


class TrainingError(RuntimeError):
    """Training could not run (e.g. the Dask scheduler is unreachable)."""


# --------------------------------------------------------------------------------------------------
# the window
# --------------------------------------------------------------------------------------------------


class InputPartition(PartitionRef):
    """A validated partition used for training, with the dataset declaration it was validated under."""

    dataset_schema_hash: str


class TrainingWindow(BaseModel):
    partitions: list[InputPartition]
    first_day: dt.date
    last_day: dt.date
    requested: str  # how the window was asked for, e.g. "last 10 validated days up to 2026-10-14"

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)


def select_window(store: ObjectStore, *, days: int | None = None, end: dt.date | None = None,
                  start: dt.date | None = None) -> TrainingWindow:
    """The validated partitions to train on: ``start..end``, or the last ``days`` validated days up to ``end``."""
    if start is not None and days is not None:
        raise ConfigError("give either a number of days or a start date for the training window, not both")
    if start is None and (days is None or days < 1):
        raise ConfigError(f"the training window needs at least 1 day, got {days!r}")
    if start is not None and end is not None and end < start:
        raise TrainingDataError(f"training window end {end} is before its start {start}")
    available = list_partitions(store, "validated")
    if not available:
        raise TrainingDataError(f"no validated partitions in {store.description}: ingest and validate data first "
                                "(mlcycle ingest --start ... --end ...)")
    chosen = [d for d in available if (end is None or d <= end) and (start is None or d >= start)]
    if start is None:
        chosen = chosen[-days:]
        requested = f"last {days} validated days" + (f" up to {end}" if end else "")
    else:
        requested = f"validated days {start}..{end or available[-1]}"
    if not chosen:
        raise TrainingDataError(
            f"no validated partitions in the training window ({requested}); validated dates available: "
            f"{available[0]}..{available[-1]} ({len(available)} dates)")
    partitions = []
    for day in chosen:
        manifest = read_manifest(store, "validated", day)
        partitions.append(InputPartition(**manifest.ref().model_dump(),
                                         dataset_schema_hash=manifest.dataset_schema_hash))
    return TrainingWindow(partitions=partitions, first_day=chosen[0], last_day=chosen[-1], requested=requested)


def load_rows(store: ObjectStore, spec: DatasetSpec, partitions: list[PartitionRef]) -> pd.DataFrame:
    """The partitions' rows (sha256-verified), sorted by (timestamp, id), tagged with their partition."""
    columns = [spec.id_column, spec.timestamp_column, *spec.feature_names, spec.target]
    frames = []
    for i, ref in enumerate(partitions):
        try:
            frame = read_partition(store, ref, columns=columns)
        except (KeyError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise TrainingDataError(f"validated partition {ref.date} ({ref.data_key}) lacks columns the dataset "
                                    f"declares ({columns}): {str(exc).splitlines()[0]}") from None
        frame[_PARTITION_COL] = i
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if frame[spec.timestamp_column].isna().any():
        raise TrainingDataError(f"{int(frame[spec.timestamp_column].isna().sum())} rows have no "
                                f"{spec.timestamp_column!r}; a time split needs every timestamp")
    frame[spec.timestamp_column] = pd.to_datetime(frame[spec.timestamp_column], utc=True)
    return frame.sort_values([spec.timestamp_column, spec.id_column], kind="mergesort").reset_index(drop=True)


def labels(frame: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    return (frame[spec.target].to_numpy() == spec.positive_label).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# the time split
# --------------------------------------------------------------------------------------------------

SplitName = Literal["train", "validation", "test"]


class SplitPart(BaseModel):
    name: SplitName
    start: dt.datetime  # inclusive
    end: dt.datetime  # exclusive
    first_day: dt.date
    last_day: dt.date
    rows: int
    positives: int
    partitions: list[PartitionRef]  # the partitions holding its rows

    @property
    def positive_rate(self) -> float:
        return self.positives / self.rows if self.rows else 0.0


class SplitSummary(BaseModel):
    timestamp_column: str
    train: SplitPart
    validation: SplitPart
    test: SplitPart


def time_split(frame: pd.DataFrame, spec: DatasetSpec, training: TrainingSettings,
               partitions: list[PartitionRef]) -> tuple[SplitSummary, dict[SplitName, pd.DataFrame]]:
    """Split sorted rows by day into train < validation < test; refuse splits that cannot train or test."""
    ts = frame[spec.timestamp_column]
    days = sorted(ts.dt.floor("D").unique())
    n = len(days)
    if n < 3:
        raise TrainingDataError(f"the window holds {n} day(s) of data; a time split into train, validation and "
                                "test needs at least 3 days (widen the window)")
    n_test = max(1, round(n * training.test_fraction))
    n_val = max(1, round(n * training.validation_fraction))
    if n - n_test - n_val < 1:
        n_test, n_val = 1, 1
    val_start = pd.Timestamp(days[n - n_test - n_val])
    test_start = pd.Timestamp(days[n - n_test])
    bounds = {
        "train": (ts.min().floor("D"), val_start),
        "validation": (val_start, test_start),
        "test": (test_start, ts.max().floor("D") + pd.Timedelta(days=1)),
    }
    parts, frames = {}, {}
    for name, (lo, hi) in bounds.items():
        rows = frame[(ts >= lo) & (ts < hi)]
        y = labels(rows, spec)
        if len(rows) < training.min_rows:
            raise TrainingDataError(f"the {name} window ({lo.date()}..{(hi - pd.Timedelta(days=1)).date()}) has "
                                    f"{len(rows)} rows; at least training.min_rows={training.min_rows} are needed")
        if len(np.unique(y)) < 2:
            raise TrainingDataError(f"the {name} window ({lo.date()}..{(hi - pd.Timedelta(days=1)).date()}) holds a "
                                    f"single class of {spec.target!r} ({int(y[0])} in all {len(rows)} rows); a "
                                    "classifier needs both")
        used = sorted(set(rows[_PARTITION_COL].tolist()))
        parts[name] = SplitPart(
            name=name, start=lo.to_pydatetime(), end=hi.to_pydatetime(), first_day=lo.date(),
            last_day=(hi - pd.Timedelta(days=1)).date(), rows=len(rows), positives=int(y.sum()),
            partitions=[PartitionRef(**partitions[i].model_dump(include=set(PartitionRef.model_fields)))
                        for i in used])
        frames[name] = rows
    # no leakage: every training row precedes every validation row, which precedes every test row
    assert frames["train"][spec.timestamp_column].max() < frames["validation"][spec.timestamp_column].min()
    assert frames["validation"][spec.timestamp_column].max() < frames["test"][spec.timestamp_column].min()
    return SplitSummary(timestamp_column=spec.timestamp_column, **parts), frames


def load_test_window(store: ObjectStore, spec: DatasetSpec, split: SplitSummary) -> pd.DataFrame:
    """Re-read exactly the test window's rows (same order as at training) from its partitions."""
    frame = load_rows(store, spec, split.test.partitions)
    ts = frame[spec.timestamp_column]
    return frame[(ts >= split.test.start) & (ts < split.test.end)].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------------------


class CandidateScore(BaseModel):
    params: dict[str, Any]
    mean_score: float
    std_score: float
    rank: int


class SearchSummary(BaseModel):
    strategy: str  # random | halving
    cv: str
    scoring: str
    n_candidates: int
    best_params: dict[str, Any]
    best_score: float
    candidates: list[CandidateScore]
    backend: str
    n_jobs: int
    seconds: float


@contextmanager
def search_backend(training: TrainingSettings) -> Iterator[str]:
    """The joblib backend of the search: loky/threading locally, or ``dask`` on a cluster.

    With ``training.dask_scheduler`` set, joblib's Dask backend sends every candidate fit to that
    cluster (the workers need the same scikit-learn); without it, ``joblib_backend: dask`` is an error.
    """
    import joblib

    backend = training.resolved_backend
    if backend != "dask":
        inner = {"inner_max_num_threads": training.threads_per_fit} if (
            backend == "loky" and training.threads_per_fit) else {}
        with joblib.parallel_config(backend=backend, **inner):
            yield backend
        return
    if not training.dask_scheduler:
        raise ConfigError("training.joblib_backend is 'dask' but training.dask_scheduler is not set; give the "
                          "scheduler address (tcp://host:8786): MLCYCLE_DASK__ADDRESS (dask.address) for all "
                          "heavy work, or MLCYCLE_TRAINING__DASK_SCHEDULER for the search alone")
    from distributed import Client

    try:
        client = Client(training.dask_scheduler, timeout=10)
    except (OSError, TimeoutError) as exc:
        raise TrainingError(f"cannot reach the Dask scheduler at {training.dask_scheduler} (dask.address / "
                            f"training.dask_scheduler): {exc}") from None
    try:
        with joblib.parallel_config(backend="dask"):
            yield f"dask ({training.dask_scheduler}, {len(client.scheduler_info().get('workers', {}))} workers)"
    finally:
        client.close()


@contextmanager
def fit_threads(training: TrainingSettings) -> Iterator[None]:
    """Cap OpenMP/BLAS threads in this process at ``training.threads_per_fit`` (no cap when None)."""
    if training.threads_per_fit is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=training.threads_per_fit):
        yield


def run_search(pipeline, family, frames: dict[SplitName, pd.DataFrame], y: dict[SplitName, np.ndarray],
               features, training: TrainingSettings, *, primary_metric: str, n_iter: int, seed: int):
    """Search the family's space; return the best pipeline refitted on train + validation, and a summary."""
    from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV, TimeSeriesSplit

    X = model_input(pd.concat([frames["train"], frames["validation"]], ignore_index=True), features)
    target = np.concatenate([y["train"], y["validation"]])
    if training.cv == "holdout":
        cv = PredefinedSplit(np.r_[np.full(len(y["train"]), -1), np.zeros(len(y["validation"]), dtype=int)])
    else:
        cv = TimeSeriesSplit(n_splits=training.cv_folds)  # rows are in time order
    space = search_distributions(family)
    n_iter = min(n_iter, _grid_size(space))
    scoring = SCORERS[primary_metric]
    common = dict(scoring=scoring, cv=cv, n_jobs=training.n_jobs, random_state=seed, refit=True,
                  error_score="raise")
    if training.search == "halving":
        from sklearn.experimental import enable_halving_search_cv  # noqa: F401
        from sklearn.model_selection import HalvingRandomSearchCV

        # "exhaust": the last round uses all rows; the default "smallest" starts on a handful of rows,
        # too few to hold both classes
        search = HalvingRandomSearchCV(pipeline, space, n_candidates=max(n_iter, 2), factor=2,
                                       min_resources="exhaust", **common)
    else:
        search = RandomizedSearchCV(pipeline, space, n_iter=n_iter, **common)
    started = time.perf_counter()
    with search_backend(training) as backend:
        search.fit(X, target)
    seconds = time.perf_counter() - started
    results = search.cv_results_
    candidates = [
        CandidateScore(params=_plain(results["params"][i]), mean_score=float(results["mean_test_score"][i]),
                       std_score=float(results["std_test_score"][i]), rank=int(results["rank_test_score"][i]))
        for i in range(len(results["params"]))
    ]
    summary = SearchSummary(
        strategy=training.search, cv=training.cv, scoring=scoring, n_candidates=len(candidates),
        best_params=_plain(search.best_params_), best_score=float(search.best_score_),
        candidates=sorted(candidates, key=lambda c: c.rank), backend=backend, n_jobs=training.n_jobs,
        seconds=round(seconds, 3),
    )
    return search.best_estimator_, summary


def _grid_size(space: dict[str, Any]) -> int:
    if any(not isinstance(v, list) for v in space.values()):
        return 1_000_000_000
    return math.prod(len(v) for v in space.values())


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """JSON-able parameter values (numpy scalars to Python), keys without the pipeline step prefix."""
    out = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        out[key.split("__", 1)[-1]] = value
    return out


# --------------------------------------------------------------------------------------------------
# the challenger, staged
# --------------------------------------------------------------------------------------------------


class StagedArtifact(BaseModel):
    key: str
    sha256: str
    bytes: int


class Candidate(BaseModel):
    """A trained, scored, not yet registered model: what the train task hands to the rest of the flow."""

    model_name: str
    staging_prefix: str
    family: str
    estimator: str
    params: dict[str, Any]  # the estimator's parameters: fixed ones and the search's best
    seed: int
    threshold: float
    features: list[InputColumn]
    dataset: str
    dataset_schema_hash: str
    window: TrainingWindow
    split: SplitSummary
    search: SearchSummary
    scores: ModelScores  # on the test window
    importances: list[FeatureImportance]
    artifacts: dict[str, StagedArtifact] = Field(default_factory=dict)  # name in the version -> staged object
    seconds: dict[str, float] = Field(default_factory=dict)


class Comparison(BaseModel):
    """The champion on the challenger's test rows, and the paired bootstrap of the improvement."""

    champion_version: int | None = None
    # test days the champion was itself fitted on: its scores there are optimistic (the comparison is
    # then conservative: it can only make promotion harder)
    champion_fitted_on_test_days: list[dt.date] = Field(default_factory=list)
    champion_scores: ModelScores | None = None
    champion_error: str | None = None
    bootstrap: BootstrapResult | None = None
    artifacts: dict[str, StagedArtifact] = Field(default_factory=dict)


def model_name(settings: Settings) -> str:
    return settings.training.model_name or f"{settings.dataset.name}-{settings.dataset.target}"


def slice_features(settings: Settings) -> list[str]:
    """The categorical columns the test window is sliced by (whether or not a model reads them)."""
    return settings.gate.slice_features or [f.name for f in settings.dataset.categorical_features]


def train_challenger(store: ObjectStore, settings: Settings, window: TrainingWindow, *, family: str | None = None,
                     n_iter: int | None = None, seed: int | None = None) -> Candidate:
    """Load the window, split it, search, score on the test window, profile, and stage the result."""
    training = settings.training
    family_name, family_spec = resolve_family(settings, family)  # fails before any data is read
    seed = training.seed if seed is None else seed
    n_iter = training.n_iter if n_iter is None else n_iter
    if n_iter < 1:
        raise ConfigError(f"the search budget must be at least 1 candidate, got {n_iter}")
    features = training_features(settings)
    with fit_threads(training):
        return _train_challenger(store, settings, window, family_name, family_spec, features, n_iter, seed)


def _train_challenger(store: ObjectStore, settings: Settings, window: TrainingWindow, family_name: str, family_spec,
                      features, n_iter: int, seed: int) -> Candidate:
    from mlcycle.tasks.profile import PROFILE_FILE, build_profile
    from mlcycle.tasks.registry import staging_prefix

    spec, training = settings.dataset, settings.training
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    frame = load_rows(store, spec, window.partitions)
    split, frames = time_split(frame, spec, training, window.partitions)
    del frame
    y = {name: labels(part, spec) for name, part in frames.items()}
    seconds["load_and_split"] = time.perf_counter() - clock

    pipeline, search = run_search(build_pipeline(features, family_spec, seed), family_spec, frames, y, features,
                                  training, primary_metric=settings.gate.primary_metric, n_iter=n_iter, seed=seed)
    seconds["search"] = search.seconds

    clock = time.perf_counter()
    test = frames["test"]
    scores = pipeline.predict_proba(model_input(test, features))[:, 1]
    test_scores = score_model(test, y["test"], scores, slice_features(settings), training.threshold)
    importances = permutation_importances(pipeline, model_input(test, features), y["test"], seed=seed)
    fitted = pd.concat([frames["train"], frames["validation"]], ignore_index=True)
    profile = build_profile(fitted, features, np.concatenate([y["train"], y["validation"]]), scores,
                            dataset=spec.name, dataset_schema_hash=spec.schema_hash(),
                            n_bins=training.profile_bins, created_at=dt.datetime.now(dt.UTC),
                            sample_size=settings.drift.reference_sample_size, seed=seed)
    seconds["evaluate"] = time.perf_counter() - clock

    name = model_name(settings)
    prefix = staging_prefix(name, uuid.uuid4().hex)
    staged = {
        "model.joblib": _dump_model(pipeline),
        PROFILE_FILE: profile.to_json_bytes(),
        "test_predictions.parquet": _predictions_parquet(test[spec.id_column], y["test"], scores),
        "plots/feature_importance.png": importance_plot(importances, f"{name}: permutation importance (test)"),
    }
    artifacts = {}
    for rel, data in staged.items():
        info = store.put_bytes(prefix + rel, data)
        artifacts[rel] = StagedArtifact(key=info.key, sha256=info.sha256, bytes=info.size)
    estimator = pipeline.named_steps["model"]
    return Candidate(
        model_name=name, staging_prefix=prefix, family=family_name, estimator=family_spec.estimator,
        params=_plain({k: v for k, v in estimator.get_params().items() if _jsonable(v)}), seed=seed,
        threshold=training.threshold, features=input_schema(features), dataset=spec.name,
        dataset_schema_hash=spec.schema_hash(), window=window, split=split, search=search, scores=test_scores,
        importances=importances, artifacts=artifacts, seconds={k: round(v, 3) for k, v in seconds.items()},
    )


def compare_with_champion(store: ObjectStore, settings: Settings, candidate: Candidate) -> Comparison:
    """Score the champion on the challenger's test rows; bootstrap the improvement; plot both.

    A champion whose files fail their sha256 check raises :class:`~tasks.storage.IntegrityError` (an
    alarm, not a reason to replace it quietly). A champion that cannot score these rows (e.g. it reads a
    column the dataset no longer declares) is recorded as ``champion_error``, which blocks promotion.
    """
    from mlcycle.tasks.registry import load_model, read_alias

    spec, gate = settings.dataset, settings.gate
    test = load_test_window(store, spec, candidate.split)
    staged = pd.read_parquet(io.BytesIO(_read_staged(store, candidate, "test_predictions.parquet")))
    if not np.array_equal(staged["id"].astype(str).to_numpy(), test[spec.id_column].astype(str).to_numpy()):
        raise TrainingDataError("the test window's rows changed since the challenger was scored "
                                f"({candidate.split.test.first_day}..{candidate.split.test.last_day}); re-run training")
    y, challenger = staged["y"].to_numpy(), staged["score"].to_numpy()
    curves = {"challenger": challenger}
    comparison = Comparison()
    if read_alias(store, candidate.model_name) is not None:
        champion = load_model(store, candidate.model_name, "champion")
        comparison.champion_version = champion.version
        test_days = {p.date for p in candidate.split.test.partitions}
        comparison.champion_fitted_on_test_days = sorted(
            p.date for p in champion.metadata.lineage.partitions if p.date in test_days)
        try:
            with fit_threads(settings.training):
                champion_scores = champion.predict_proba(test)
        except Exception as exc:  # noqa: BLE001 - any failure to score is recorded and blocks promotion
            comparison.champion_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:
            comparison.champion_scores = score_model(test, y, champion_scores,
                                                     slice_features(settings),
                                                     champion.metadata.threshold)
            comparison.bootstrap = paired_bootstrap(y, challenger, champion_scores, gate.primary_metric,
                                                    samples=gate.bootstrap_samples, seed=gate.bootstrap_seed,
                                                    confidence=gate.confidence)
            curves[f"champion v{champion.version}"] = champion_scores
    title = f"{candidate.model_name}: test {candidate.split.test.first_day}..{candidate.split.test.last_day}"
    for rel, data in (("plots/roc.png", roc_plot(y, curves, f"ROC, {title}")),
                      ("plots/calibration.png", calibration_plot(y, curves, f"calibration, {title}"))):
        info = store.put_bytes(candidate.staging_prefix + rel, data)
        comparison.artifacts[rel] = StagedArtifact(key=info.key, sha256=info.sha256, bytes=info.size)
    return comparison


def _dump_model(pipeline) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(pipeline, buf, compress=3)
    return buf.getvalue()


def _predictions_parquet(ids, y, scores) -> bytes:
    frame = pd.DataFrame({"id": pd.Series(ids).astype(str).to_numpy(), "y": y, "score": scores})
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def _read_staged(store: ObjectStore, candidate: Candidate, rel: str) -> bytes:
    artifact = candidate.artifacts[rel]
    return get_verified(store, artifact.key, artifact.sha256)


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, np.generic))


# --------------------------------------------------------------------------------------------------
# Prefect tasks: thin wrappers
# --------------------------------------------------------------------------------------------------

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402


@task(name="select-window", cache_policy=NO_CACHE)
def select_window_task(settings: Settings, days: int | None = None, end: dt.date | None = None,
                       start: dt.date | None = None) -> TrainingWindow:
    from mlcycle.tasks.storage import open_store

    return select_window(open_store(settings), days=days, end=end, start=start)


@task(name="train-challenger", cache_policy=NO_CACHE)
def train_challenger_task(settings: Settings, window: TrainingWindow, family: str | None = None,
                          n_iter: int | None = None, seed: int | None = None) -> Candidate:
    from mlcycle.tasks.storage import open_store

    return train_challenger(open_store(settings), settings, window, family=family, n_iter=n_iter, seed=seed)


@task(name="score-champion", cache_policy=NO_CACHE)
def compare_task(settings: Settings, candidate: Candidate) -> Comparison:
    from mlcycle.tasks.storage import open_store

    return compare_with_champion(open_store(settings), settings, candidate)
