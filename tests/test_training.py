"""Training: the window of validated days, the time split, the search, reproducibility, the flow.

The small data helpers (simulated validated days, fast settings) are in ``tests/support/training.py``.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from mlcycle.tasks.partitions import list_partitions
from mlcycle.tasks.settings import ConfigError
from mlcycle.tasks.storage import LocalStore
from mlcycle.tasks.training.challenger import train_challenger
from mlcycle.tasks.training.window import TrainingDataError, labels, load_rows, select_window, time_split
from tests.support.env import run_cli
from tests.support.training import (
    DAYS,
    ROWS,
    START,
    copy_template,
    fast_settings,
    one_thread_per_fit,
    simulated,
    write_day,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread_per_fit():
        yield


# --------------------------------------------------------------------------------------------------
# the window
# --------------------------------------------------------------------------------------------------


def test_window_is_the_last_n_validated_days_and_skips_quarantine(train_env):
    settings, store = train_env
    late = START + dt.timedelta(days=DAYS + 1)
    write_day(store, settings, simulated(settings, late), late, zone="quarantine")
    window = select_window(store, days=3)
    assert [p.date for p in window.partitions] == [START + dt.timedelta(days=i) for i in (5, 6, 7)]
    assert late not in [p.date for p in window.partitions]
    assert all(p.zone == "validated" for p in window.partitions)
    ending = select_window(store, days=2, end=START + dt.timedelta(days=3))
    assert [p.date for p in ending.partitions] == [START + dt.timedelta(days=2), START + dt.timedelta(days=3)]


def test_no_validated_data_is_a_clear_error(tmp_path):
    store = LocalStore(tmp_path / "empty")
    with pytest.raises(TrainingDataError, match="no validated partitions .* ingest and validate data first"):
        select_window(store, days=5)


def test_window_that_does_not_exist_names_the_available_dates(train_env):
    _, store = train_env
    with pytest.raises(TrainingDataError, match=r"validated dates available: 2026-10-01\.\.2026-10-08 \(8 dates\)"):
        select_window(store, days=5, end=dt.date(2025, 1, 1))
    with pytest.raises(TrainingDataError, match="before its start"):
        select_window(store, start=dt.date(2026, 10, 5), end=dt.date(2026, 10, 2))


def test_time_split_puts_latest_days_in_test_without_leakage(train_env):
    settings, store = train_env
    window = select_window(store, days=DAYS)
    frame = load_rows(store, settings.dataset, window.partitions)
    split, frames = time_split(frame, settings.dataset, settings.training, window.partitions)
    ts = settings.dataset.timestamp_column
    assert frames["train"][ts].max() < frames["validation"][ts].min()
    assert frames["validation"][ts].max() < frames["test"][ts].min()
    assert split.test.last_day == START + dt.timedelta(days=DAYS - 1)
    assert (split.train.rows, split.validation.rows, split.test.rows) == (4 * ROWS, 2 * ROWS, 2 * ROWS)
    assert [p.date for p in split.test.partitions] == [START + dt.timedelta(days=6), START + dt.timedelta(days=7)]
    assert split.train.positives == int(labels(frames["train"], settings.dataset).sum())


def test_split_with_too_few_rows_or_one_class_is_refused(train_env):
    settings, store = train_env
    window = select_window(store, days=DAYS)
    frame = load_rows(store, settings.dataset, window.partitions)
    strict = settings.training.model_copy(update={"min_rows": 10 * ROWS})
    with pytest.raises(TrainingDataError, match=r"the train window .* has 6000 rows; at least training.min_rows=15000"):
        time_split(frame, settings.dataset, strict, window.partitions)
    one_class = frame.copy()
    one_class[settings.dataset.target] = 0
    with pytest.raises(TrainingDataError, match="single class of 'defaulted'"):
        time_split(one_class, settings.dataset, settings.training, window.partitions)
    with pytest.raises(TrainingDataError, match="needs at least 3 days"):
        short = select_window(store, days=2)
        time_split(load_rows(store, settings.dataset, short.partitions), settings.dataset, settings.training,
                   short.partitions)


# --------------------------------------------------------------------------------------------------
# configuration errors
# --------------------------------------------------------------------------------------------------


def test_unknown_family_or_feature_in_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="training.family 'xgboost' is not a configured family"):
        fast_settings(tmp_path, training={"family": "xgboost"})
    with pytest.raises(ConfigError, match=r"training.features names unknown feature\(s\) \['shoe_size'\]"):
        fast_settings(tmp_path, training={"features": ["age", "shoe_size"]})
    with pytest.raises(ConfigError, match="gate.slice_features names"):
        fast_settings(tmp_path, gate={"slice_features": ["age"]})
    with pytest.raises(ConfigError, match="estimator"):
        fast_settings(tmp_path, training={"families": {"svm": {"estimator": "support_vector_machine"}}})
    with pytest.raises(ConfigError, match="gate.floors names 'brier'"):
        fast_settings(tmp_path, gate={"floors": {"brier": 0.1}})


def test_unknown_family_or_parameter_fails_before_reading_data(train_env, monkeypatch):
    from mlcycle.tasks.features import resolve_family

    settings, store = train_env
    window = select_window(store, days=DAYS)
    monkeypatch.setattr("mlcycle.tasks.training.challenger.load_rows", lambda *a, **k: pytest.fail("data was read"))
    with pytest.raises(ConfigError, match=r"unknown model family 'forest'; configured families"):
        train_challenger(store, settings, window, family="forest")
    bad = fast_settings(settings.home, training={"families": {"logistic_regression": {
        "search_space": {"C_typo": {"low": 0.1, "high": 1}}}}})
    with pytest.raises(ConfigError, match=r"search_space names unknown parameter\(s\) \['C_typo'\] of Logistic"):
        resolve_family(bad, None)


# --------------------------------------------------------------------------------------------------
# the pipeline and the search
# --------------------------------------------------------------------------------------------------


def test_pipeline_handles_nulls_and_unknown_categories(train_env):
    from mlcycle.tasks.features import build_pipeline, resolve_family, training_features

    settings, store = train_env
    features = training_features(settings)
    frame = load_rows(store, settings.dataset, select_window(store, days=3).partitions)
    pipeline = build_pipeline(features, resolve_family(settings, "hist_gradient_boosting")[1], seed=1,
                              task=settings.dataset.task)
    pipeline.fit(frame, labels(frame, settings.dataset))
    odd = frame.head(4).copy()
    odd["region"] = odd["region"].astype(object)
    odd.loc[odd.index[0], "region"] = "atlantis"  # never declared
    odd.loc[odd.index[1], "region"] = None
    odd.loc[odd.index[2], "income"] = np.nan
    scores = pipeline.predict_proba(odd)[:, 1]
    assert scores.shape == (4,) and np.all((scores > 0) & (scores < 1))


def test_same_seed_and_data_give_the_same_model_and_metrics_whatever_the_workers(train_env):
    settings, store = train_env
    window = select_window(store, days=DAYS)
    one = train_challenger(store, settings, window, family="hist_gradient_boosting")
    two_workers = settings.model_copy(update={"training": settings.training.model_copy(update={"n_jobs": 2})})
    two = train_challenger(store, two_workers, window, family="hist_gradient_boosting")
    assert one.scores == two.scores
    assert one.search.best_params == two.search.best_params
    assert one.artifacts["model.joblib"].sha256 == two.artifacts["model.joblib"].sha256
    assert one.importances == two.importances
    seeded = [train_challenger(store, settings, window, seed=s).search.best_params for s in (1, 2)]
    assert seeded[0] != seeded[1]


def test_search_runs_on_a_dask_cluster_with_the_same_result(train_env):
    from distributed import LocalCluster

    settings, store = train_env
    window = select_window(store, days=DAYS)
    local = train_challenger(store, settings, window)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        on_dask = settings.model_copy(update={"training": settings.training.model_copy(
            update={"dask_scheduler": cluster.scheduler_address, "n_jobs": -1})})
        remote = train_challenger(store, on_dask, window)
    assert remote.search.backend.startswith("dask (")
    assert remote.scores == local.scores


def test_dask_backend_without_scheduler_is_a_config_error(train_env):
    settings, store = train_env
    no_address = settings.model_copy(update={"training": settings.training.model_copy(
        update={"joblib_backend": "dask"})})
    with pytest.raises(ConfigError, match="training.dask_scheduler is not set"):
        train_challenger(store, no_address, select_window(store, days=DAYS))


def test_halving_search_and_time_series_cv_train_too(train_env):
    settings, store = train_env
    variant = settings.model_copy(update={"training": settings.training.model_copy(
        update={"search": "halving", "cv": "time_series", "cv_folds": 2})})
    candidate = train_challenger(store, variant, select_window(store, days=DAYS), n_iter=4)
    assert candidate.search.strategy == "halving" and candidate.search.n_candidates >= 4
    assert candidate.scores.overall.roc_auc > 0.7


def test_candidate_is_staged_with_profile_and_test_scores_per_slice(train_env):
    from mlcycle.tasks.profile import ReferenceProfile

    settings, store = train_env
    candidate = train_challenger(store, settings, select_window(store, days=DAYS))
    assert set(candidate.artifacts) == {"model.joblib", "reference_profile.json", "test_predictions.parquet",
                                        "reference_sample.parquet", "plots/feature_importance.png"}
    # the multivariate drift test's reference: joint rows of every feature column, seeded, at most reference_rows
    import io

    import pandas as pd

    sample = pd.read_parquet(io.BytesIO(store.get_bytes(candidate.artifacts["reference_sample.parquet"].key)))
    assert list(sample.columns) == [f.name for f in settings.dataset.features]
    assert 0 < len(sample) <= settings.drift.multivariate.reference_rows
    assert all(a.key.startswith(candidate.staging_prefix) for a in candidate.artifacts.values())
    assert list_partitions(store, "validated")  # staging never touches data zones
    slices = {(s.feature, s.value) for s in candidate.scores.slices}
    assert ("region", "south") in slices and ("loan_purpose", "business") in slices
    profile = ReferenceProfile.model_validate_json(store.get_bytes(candidate.artifacts["reference_profile.json"].key))
    income = profile.numeric["income"]
    assert 0 < income.null_rate < 0.1
    assert sum(income.counts) == round(income.rows * (1 - income.null_rate))
    assert len(income.bin_edges) == len(income.counts) + 1 == settings.training.profile_bins + 1
    assert income.bin_counts([-1.0, 1e12, np.nan])[0] == 1 and income.bin_counts([1e12])[-1] == 1
    region = profile.categorical["region"]
    assert set(region.frequencies) >= {"north", "south", "east", "west", "central"}
    assert abs(sum(region.frequencies.values()) - 1) < 1e-9
    assert sum(profile.predictions.counts) == candidate.split.test.rows
    assert profile.rows == candidate.split.train.rows + candidate.split.validation.rows


# --------------------------------------------------------------------------------------------------
# the flow, end to end (one real run pair under the shared Prefect harness)
# --------------------------------------------------------------------------------------------------


@pytest.mark.flow
def test_train_flow_promotes_first_model_then_refuses_an_identical_one(env_settings, prefect_harness,
                                                                       validated_template, tmp_path,
                                                                       monkeypatch, capsys):
    from prefect.artifacts import Artifact

    from mlcycle.flows.train import train_flow
    from mlcycle.tasks.registry.versions import list_versions, load_model, read_alias
    from mlcycle.tasks.storage import open_store

    copy_template(validated_template, tmp_path / "home")
    settings = env_settings(training__family="logistic_regression", training__n_iter="2", training__n_jobs="1",
                            training__window_days=str(DAYS), gate__bootstrap_samples="300")
    code, out, err = run_cli(monkeypatch, capsys, "train", "--json")  # the first run through `mlcycle train`
    assert code == 0, err
    first = json.loads(out)
    assert first["promoted"] and first["version"] == 1 and first["champion"] == 1 and first["previous"] is None
    decision = Artifact.get("loans-default-gate-decision")
    assert decision is not None and "loans-default v1: PROMOTED" in decision.data
    assert "plots/roc.png" in decision.data
    assert Artifact.get("loans-default-comparison") is not None
    second = train_flow(seed=settings.training.seed)
    assert not second.promoted and second.version == 2 and second.champion == 1
    assert "min_delta" in second.decision.summary and "bootstrap_ci" in second.decision.summary
    assert "champion_test_overlap" in {r.rule for r in second.decision.rules}  # same window: flagged
    store = open_store(settings)
    assert read_alias(store, "loans-default").version == 1
    assert [v.version for v in list_versions(store, "loans-default")] == [2, 1]
    champion = load_model(store, "loans-default")
    assert champion.metadata.lineage.flow_run_id is not None
    assert {"model.joblib", "metadata.json", "evaluation.json", "report.md", "plots/roc.png",
            "plots/calibration.png", "plots/feature_importance.png", "reference_profile.json"} <= {
        k.rsplit("/1/", 1)[-1] for k in store.list("models/loans-default/1/")}
    assert not store.list("models/loans-default/staging/")  # staging cleaned after registration
