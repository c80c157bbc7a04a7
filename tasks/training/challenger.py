"""The challenger: trained on the window, scored on its test days, staged; then the champion on the same rows.

:func:`train_challenger` loads the window's partitions (sha256-verified), splits them in time
(:mod:`~mlcycle.tasks.training.window`), checks each feature alone for leakage
(:mod:`~mlcycle.tasks.training.leakage`, when ``gate.leakage`` is on), runs the search
(:mod:`~mlcycle.tasks.training.search`), calibrates a classifier on its validation days when its probabilities
need it (:mod:`~mlcycle.tasks.evaluation.calibration`), scores the refitted pipeline on the test window (overall and per
slice), computes permutation importance and the reference profile, and stages model, test predictions,
profile and importance plot under ``models/<name>/staging/<token>/``: a typed
:class:`~mlcycle.tasks.records.training.Candidate`, not yet a version. An unknown family or parameter is a
:class:`~mlcycle.tasks.settings.ConfigError` before any data is read.

Everything follows ``dataset.task``: the labels, the search's scorer, the metrics, and the staged test
predictions (``test_predictions.parquet``: ``id`` and ``y``, then binary ``score``, the positive class's
probability; multiclass ``p:<class>`` per class in ``dataset.class_labels`` order; regression
``prediction``).

:func:`compare_with_champion` scores the champion on exactly those test rows, bootstraps the improvement
and stages the task's plots (binary ROC and calibration, multiclass confusion matrices, regression
predicted-vs-actual and residuals): a :class:`~mlcycle.tasks.records.training.Comparison`.
"""

from __future__ import annotations

import datetime as dt
import io
import time
import uuid
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.tasks.evaluation.bootstrap import paired_bootstrap
from mlcycle.tasks.evaluation.calibration import calibrate_pipeline, with_test_reliability
from mlcycle.tasks.evaluation.metrics import permutation_importances, score_model
from mlcycle.tasks.evaluation.plots import comparison_plots, importance_plot
from mlcycle.tasks.features import (
    build_pipeline,
    input_schema,
    model_input,
    resolve_family,
    training_features,
)
from mlcycle.tasks.lazy_task import NO_CACHE, task
from mlcycle.tasks.predictions import model_scores
from mlcycle.tasks.profile import PROFILE_FILE, build_profile
from mlcycle.tasks.records.training import Candidate, Comparison, StagedArtifact, TrainingWindow
from mlcycle.tasks.registry.aliases import read_alias
from mlcycle.tasks.registry.versions import load_model, model_name, staging_prefix
from mlcycle.tasks.settings import ConfigError, Settings
from mlcycle.tasks.storage import ObjectStore, get_verified, open_store
from mlcycle.tasks.training.leakage import check_leakage
from mlcycle.tasks.training.references import monitoring_artifacts
from mlcycle.tasks.training.search import fit_threads, plain_params, run_search, search_scorer
from mlcycle.tasks.training.window import (
    TrainingDataError,
    labels,
    load_rows,
    load_test_window,
    select_window,
    time_split,
)


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
    spec, training, gate = settings.dataset, settings.training, settings.gate
    task, classes = spec.task, spec.class_labels
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    frame = load_rows(store, spec, window.partitions)
    split, frames = time_split(frame, spec, training, window.partitions)
    del frame
    y = {name: labels(part, spec) for name, part in frames.items()}
    seconds["load_and_split"] = time.perf_counter() - clock

    leakage = None
    if gate.leakage.enabled:
        clock = time.perf_counter()
        leakage = check_leakage(frames, y, features, spec, gate.leakage, seed)
        seconds["leakage"] = time.perf_counter() - clock

    scoring = search_scorer(task, gate.primary_metric, classes, training.threshold)
    pipeline, search = run_search(build_pipeline(features, family_spec, seed, task=task), family_spec, frames, y,
                                  features, training, settings.dask, scoring=scoring, n_iter=n_iter, seed=seed)
    seconds["search"] = search.seconds

    calibration = None
    if task != "regression" and training.calibration.enabled:
        clock = time.perf_counter()
        pipeline, calibration = calibrate_pipeline(pipeline, frames, y, features, training.calibration, seed)
        seconds["calibration"] = time.perf_counter() - clock

    clock = time.perf_counter()
    test = frames["test"]
    X_test = model_input(test, features)
    scores = model_scores(pipeline, X_test, task, classes)
    if calibration is not None:
        raw = model_scores(pipeline.model, X_test, task, classes) if calibration.applied else scores
        calibration = with_test_reliability(calibration, y["test"], raw, scores,
                                            classes if task == "multiclass" else [0, 1])
    test_scores = score_model(test, y["test"], scores, slice_features(settings), training.threshold, task=task,
                              classes=classes)
    importances = permutation_importances(pipeline, X_test, y["test"], seed=seed, scoring=scoring)
    fitted = pd.concat([frames["train"], frames["validation"]], ignore_index=True)
    profile = build_profile(fitted, features, np.concatenate([y["train"], y["validation"]]), scores,
                            dataset=spec.name, dataset_schema_hash=spec.schema_hash(),
                            n_bins=training.profile_bins, created_at=dt.datetime.now(dt.UTC),
                            sample_size=settings.drift.reference_sample_size, seed=seed, task=task, classes=classes)
    seconds["evaluate"] = time.perf_counter() - clock

    name = model_name(settings)
    prefix = staging_prefix(name, uuid.uuid4().hex)
    staged = {
        "model.joblib": dump_model(pipeline),
        PROFILE_FILE: profile.to_json_bytes(),
        "test_predictions.parquet": predictions_parquet(test[spec.id_column], y["test"], scores, task, classes),
        "plots/feature_importance.png": importance_plot(importances, f"{name}: permutation importance (test)",
                                                        gate.primary_metric),
        # the monitor's references beyond the profile: joint rows, and the regression loss model
        **monitoring_artifacts(frames, y["test"], scores, features, task,
                               settings.drift.multivariate.reference_rows, seed),
    }
    artifacts = {}
    for rel, data in staged.items():
        info = store.put_bytes(prefix + rel, data)
        artifacts[rel] = StagedArtifact(key=info.key, sha256=info.sha256, bytes=info.size)
    estimator = pipeline.named_steps["model"]  # a calibrated model shows its pipeline's steps
    return Candidate(
        model_name=name, staging_prefix=prefix, family=family_name, estimator=family_spec.estimator,
        params=plain_params({k: v for k, v in estimator.get_params().items() if _jsonable(v)}), seed=seed,
        threshold=training.threshold, task=task, classes=classes,
        positive_label=spec.positive_label if task == "binary" else None, features=input_schema(features),
        dataset=spec.name, dataset_schema_hash=spec.schema_hash(), window=window, split=split, search=search,
        scores=test_scores, importances=importances, leakage=leakage, calibration=calibration, artifacts=artifacts,
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )


def compare_with_champion(store: ObjectStore, settings: Settings, candidate: Candidate) -> Comparison:
    """Score the champion on the challenger's test rows; bootstrap the improvement; plot both.

    A champion whose files fail their sha256 check raises :class:`~mlcycle.tasks.storage.IntegrityError` (an
    alarm, not a reason to replace it quietly). A champion that cannot score these rows (e.g. it reads a
    column the dataset no longer declares) is recorded as ``champion_error``, which blocks promotion.
    """
    spec, gate = settings.dataset, settings.gate
    test = load_test_window(store, spec, candidate.split)
    staged = pd.read_parquet(io.BytesIO(_read_staged(store, candidate, "test_predictions.parquet")))
    if not np.array_equal(staged["id"].astype(str).to_numpy(), test[spec.id_column].astype(str).to_numpy()):
        raise TrainingDataError("the test window's rows changed since the challenger was scored "
                                f"({candidate.split.test.first_day}..{candidate.split.test.last_day}); re-run training")
    task, classes = candidate.task, candidate.classes
    y, challenger = staged_predictions(staged, task, classes)
    curves = {"challenger": challenger}
    comparison = Comparison()
    if read_alias(store, candidate.model_name) is not None:
        champion = load_model(store, candidate.model_name, "champion")
        comparison.champion_version = champion.version
        test_days = {p.date for p in candidate.split.test.partitions}
        comparison.champion_fitted_on_test_days = sorted(
            p.date for p in champion.metadata.lineage.partitions if p.date in test_days)
        try:
            mismatch = champion_mismatch(champion.metadata, candidate)
            if mismatch:
                raise ValueError(mismatch)
            with fit_threads(settings.training):
                champion_scores = champion.predictions(test)
        except Exception as exc:  # noqa: BLE001 - any failure to score is recorded and blocks promotion
            comparison.champion_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:
            comparison.champion_scores = score_model(test, y, champion_scores, slice_features(settings),
                                                     champion.metadata.threshold, task=task, classes=classes)
            comparison.bootstrap = paired_bootstrap(y, challenger, champion_scores, gate.primary_metric,
                                                    samples=gate.bootstrap_samples, seed=gate.bootstrap_seed,
                                                    confidence=gate.confidence, task=task, classes=classes,
                                                    threshold=candidate.threshold)
            curves[f"champion v{champion.version}"] = champion_scores
    title = f"{candidate.model_name}: test {candidate.split.test.first_day}..{candidate.split.test.last_day}"
    for rel, data in comparison_plots(task, y, curves, title, classes).items():
        info = store.put_bytes(candidate.staging_prefix + rel, data)
        comparison.artifacts[rel] = StagedArtifact(key=info.key, sha256=info.sha256, bytes=info.size)
    return comparison


def champion_mismatch(champion, candidate: Candidate) -> str | None:
    """Why the champion's outputs cannot be compared with the challenger's (another task, other classes or
    another positive label), or None. Versions registered before tasks existed are binary."""
    if champion.task != candidate.task:
        return f"it was trained for a {champion.task} task, the challenger for {candidate.task}"
    if candidate.task == "multiclass" and champion.classes != candidate.classes:
        return f"it predicts the classes {champion.classes}, the challenger {candidate.classes}"
    if candidate.task == "binary" and champion.positive_label not in (None, candidate.positive_label):
        return (f"its positive label is {champion.positive_label!r}, the challenger's "
                f"{candidate.positive_label!r}")
    return None


def dump_model(pipeline) -> bytes:
    """The joblib bytes of a fitted pipeline, as staged and registered (``model.joblib``)."""
    import joblib

    buf = io.BytesIO()
    joblib.dump(pipeline, buf, compress=3)
    return buf.getvalue()


def predictions_parquet(ids, y, scores, task: str = "binary", classes: list[str] | None = None) -> bytes:
    """The staged test predictions (the module docstring lists the columns per task)."""
    columns: dict[str, Any] = {"id": pd.Series(ids).astype(str).to_numpy(), "y": y}
    if task == "multiclass":
        columns["y"] = np.asarray(y, dtype=object).astype(str)
        columns.update({f"p:{c}": scores[:, i] for i, c in enumerate(classes or [])})
    else:
        columns["prediction" if task == "regression" else "score"] = scores
    buf = io.BytesIO()
    pd.DataFrame(columns).to_parquet(buf, index=False)
    return buf.getvalue()


def staged_predictions(staged: pd.DataFrame, task: str = "binary",
                       classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(y, predictions)`` back from :func:`predictions_parquet`'s frame."""
    if task == "multiclass":
        return (staged["y"].to_numpy(dtype=object),
                staged[[f"p:{c}" for c in classes or []]].to_numpy(dtype=float))
    return staged["y"].to_numpy(), staged["prediction" if task == "regression" else "score"].to_numpy()


def _read_staged(store: ObjectStore, candidate: Candidate, rel: str) -> bytes:
    artifact = candidate.artifacts[rel]
    return get_verified(store, artifact.key, artifact.sha256)


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, np.generic))


# --------------------------------------------------------------------------------------------------
# Prefect tasks: thin wrappers
# --------------------------------------------------------------------------------------------------


@task(name="select-window", cache_policy=NO_CACHE)
def select_window_task(settings: Settings, days: int | None = None, end: dt.date | None = None,
                       start: dt.date | None = None) -> TrainingWindow:
    return select_window(open_store(settings), days=days, end=end, start=start)


@task(name="train-challenger", cache_policy=NO_CACHE)
def train_challenger_task(settings: Settings, window: TrainingWindow, family: str | None = None,
                          n_iter: int | None = None, seed: int | None = None) -> Candidate:
    return train_challenger(open_store(settings), settings, window, family=family, n_iter=n_iter, seed=seed)


@task(name="score-champion", cache_policy=NO_CACHE)
def compare_task(settings: Settings, candidate: Candidate) -> Comparison:
    return compare_with_champion(open_store(settings), settings, candidate)
