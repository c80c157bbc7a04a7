"""Every stage's settings section: the thresholds and knobs of the life cycle, one class per stage.

``Settings`` (tasks/settings/loader.py) holds one of each: ``simulator``, ``ingest``, ``validation``,
``demo``, ``training`` (with its model families and their search spaces), ``gate``, ``rollout``,
``serving`` (with the inference log), ``drift``, ``monitor``, ``dask`` and ``retries`` (one retry policy
per stage that retries, read by tasks/retry.py). A default stated in a comment here is the default in
the code; mlcycle.yaml states the project's values.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlcycle.tasks.settings.base import Section
from mlcycle.tasks.settings.monitoring import CalibrationSettings, EstimationSettings


class DriftEvent(Section):
    """From ``start`` on, the simulator changes the data-generating process.

    kinds:
      shift         numeric: add ``amount`` reference standard deviations; categorical: move ``amount``
                    (a share, 0..1) of rows to ``category``
      concept       change the label relationship: the effect of ``feature`` on the log-odds is
                    multiplied by ``amount`` (negative flips it)
      missing       set a share ``amount`` of ``feature`` to null
      new_category  a share ``amount`` of rows get ``category``, a value never declared
    """

    start: dt.date
    kind: Literal["shift", "concept", "missing", "new_category"]
    feature: str
    amount: float
    category: str | None = None

    @model_validator(mode="after")
    def _category_needed(self) -> DriftEvent:
        if self.kind == "new_category" and not self.category:
            raise ValueError(f"drift event new_category on {self.feature!r} needs a category")
        return self


class SimulatorSettings(Section):
    seed: int = 42
    rows_per_day: int = 2_000
    drift: list[DriftEvent] = Field(default_factory=list)


class IngestSettings(Section):
    """Where batches come from and how landing files map onto the declaration (see tasks/landing.py).

    A real export rarely holds exactly the declared columns: ``columns`` renames its columns to declared
    names, ``extra_columns`` says what to do with the ones the declaration does not name (dropped and
    recorded in the manifest, or the batch quarantined), ``ids`` whether the id column comes from the data or
    is generated (deterministic: the same file gives the same ids), ``timestamps`` whether the timestamp
    column comes from the data or is the file's date (midnight UTC of its ``date=`` partition).
    """

    source: Literal["simulator", "landing"] = "simulator"
    backfill_concurrency: int = Field(default=4, ge=1, le=64)
    columns: dict[str, str] = Field(default_factory=dict)  # landing column name -> declared column name
    extra_columns: Literal["ignore", "quarantine"] = "ignore"
    ids: Literal["column", "generate"] = "column"
    timestamps: Literal["column", "file_date"] = "column"


class ValidationSettings(Section):
    result_format: Literal["BOOLEAN_ONLY", "BASIC", "SUMMARY", "COMPLETE"] = "SUMMARY"
    build_data_docs: bool = True


class DemoSettings(Section):
    start: dt.date = dt.date(2026, 10, 1)
    days: int = 14
    rollout_timeout_seconds: float = Field(default=900.0, gt=0)  # the promotion's rollout must be live by then
    inference_log_timeout_seconds: float = Field(default=60.0, gt=0)  # the traffic sent must be logged by then


# Training and the evaluation gate ------------------------------------------------------------------

# Metrics, their directions and the estimators a family may name, per task: tasks/settings/problem.py.


class ParamSpace(Section):
    """The search distribution of one hyper-parameter: a list of ``choices``, or a range.

    A range ``[low, high]`` is sampled uniformly, or log-uniformly with ``log: true``; ``integer: true``
    samples whole numbers (``high`` inclusive).
    """

    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpace:
        is_range = self.low is not None or self.high is not None
        if (self.choices is not None) == is_range:
            raise ValueError("a search parameter needs either `choices` or both `low` and `high`")
        if self.choices is not None and not self.choices:
            raise ValueError("`choices` must list at least one value")
        if is_range:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"a range needs low < high, got low={self.low} high={self.high}")
            if self.log and self.low <= 0:
                raise ValueError(f"a log-uniform range needs low > 0, got {self.low}")
        return self


class ModelFamily(Section):
    """A model family: which estimator, fixed parameters, and the space the search samples from.

    ``estimator`` is an alias (``logistic_regression``, ``hist_gradient_boosting``, ``random_forest``,
    ``ridge``: resolved for the dataset's task) or the import path of any scikit-learn-compatible class
    (``sklearn.ensemble.RandomForestRegressor``, ``mypackage.models:MyModel``); see
    tasks/settings/problem.py.
    """

    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, ParamSpace] = Field(default_factory=dict)


def _default_families() -> dict[str, ModelFamily]:
    return {
        "logistic_regression": ModelFamily(
            estimator="logistic_regression",
            params={"max_iter": 1000},
            search_space={"C": ParamSpace(low=1e-3, high=100.0, log=True),
                          "class_weight": ParamSpace(choices=[None, "balanced"])},
        ),
        "hist_gradient_boosting": ModelFamily(
            estimator="hist_gradient_boosting",
            params={"early_stopping": False, "max_iter": 200},
            search_space={"learning_rate": ParamSpace(low=0.02, high=0.3, log=True),
                          "max_leaf_nodes": ParamSpace(low=8, high=64, integer=True),
                          "min_samples_leaf": ParamSpace(low=10, high=200, integer=True, log=True),
                          "l2_regularization": ParamSpace(low=1e-4, high=10.0, log=True)},
        ),
        "ridge": ModelFamily(  # regression only: the linear baseline
            estimator="ridge",
            search_space={"alpha": ParamSpace(low=1e-3, high=100.0, log=True)},
        ),
    }


class TrainingSettings(Section):
    """How the ``train`` flow builds a challenger (see tasks.training for the contract)."""

    model_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
    window_days: int = Field(default=10, ge=3)  # the last N validated days
    family: str = "hist_gradient_boosting"
    families: dict[str, ModelFamily] = Field(default_factory=_default_families)
    features: list[str] | None = None  # a subset of dataset.features; None: all of them
    search: Literal["random", "halving"] = "random"
    n_iter: int = Field(default=8, ge=1)  # candidates sampled by the search
    cv: Literal["holdout", "time_series"] = "holdout"
    cv_folds: int = Field(default=3, ge=2)  # for cv: time_series
    validation_fraction: float = Field(default=0.2, gt=0, lt=0.5)  # share of the window's days
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    min_rows: int = Field(default=200, ge=10)  # in each of train, validation and test
    seed: int = 42
    n_jobs: int = 2  # joblib workers of the search; -1: all cores
    # OpenMP/BLAS threads per fit (and for predictions); None: the libraries' default, every core the
    # machine reports. Set it in containers with CPU limits or on shared hosts: oversubscribed
    # OpenMP threads make HistGradientBoosting several times slower.
    threads_per_fit: int | None = Field(default=None, ge=1)
    joblib_backend: Literal["loky", "threading", "dask"] = "loky"
    dask_scheduler: str | None = None  # tcp://host:8786: the search runs on that Dask cluster
    threshold: float = Field(default=0.5, gt=0, lt=1)  # decision threshold for F1, recall, precision
    profile_bins: int = Field(default=10, ge=2, le=100)  # quantile bins of the reference profile
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings)

    @property
    def resolved_backend(self) -> str:
        return "dask" if self.dask_scheduler else self.joblib_backend


class LeakageSettings(Section):
    """The gate's leakage guard: refuse a model whose results are too good to be true.

    Training (tasks/training/leakage.py) fits, for each feature alone, a small model on the training
    window (a depth-limited tree that keeps missing values as such, so a feature that is non-null exactly
    when the label is 1 is caught; a categorical feature's categories as they are) and scores it on the
    validation window; the gate (tasks/evaluation/gate.py) refuses a feature whose score reaches the task's
    threshold (rule ``leakage:<feature>``), and a test metric at or beyond its ``too_perfect`` bound (rule
    ``too_perfect:<metric>``; higher-is-better metrics at or above it, lower-is-better ones at or below it).

    Why 0.99: on real tabular data a legitimate single predictor rarely ranks rows better than ROC AUC
    ~0.9 (a credit bureau score, the strongest feature of a credit model, sits around 0.75-0.85); a
    column written from the outcome (an amount paid only by defaulters, a follow-up date only for events)
    reaches 1.0, and 0.99 still catches such a column when a little noise was added to it (a few percent
    of rows recorded otherwise). R2 0.99 from one feature means the target is that feature up to a 10% error
    in scale: a copy, a unit conversion or a sum containing it. Why 0.999 for the test: tabular outcomes
    carry noise, and a model that ranks all but one pair in a thousand right has almost always seen the
    answer.
    """

    enabled: bool = True
    feature_roc_auc: float = Field(default=0.99, gt=0.5, le=1)  # binary: one feature's validation ROC AUC
    feature_balanced_accuracy: float = Field(default=0.99, gt=0, le=1)  # multiclass: its balanced accuracy
    feature_r2: float = Field(default=0.99, gt=0, le=1)  # regression: its R2
    too_perfect: dict[str, float] = Field(default_factory=lambda: {
        "roc_auc": 0.999, "roc_auc_ovr": 0.999, "log_loss": 0.001, "r2": 0.999})
    max_rows: int = Field(default=50_000, ge=100)  # training rows the single-feature models see (seeded sample)

    @field_validator("too_perfect")
    @classmethod
    def _known_metrics(cls, bounds: dict[str, float]) -> dict[str, float]:
        from mlcycle.tasks.settings.problem import METRICS

        known = sorted({m for by_task in METRICS.values() for m in by_task})
        unknown = sorted(m for m in bounds if m not in known)
        if unknown:
            raise ValueError(f"too_perfect names unknown metric(s) {unknown}; metrics are {known}")
        return bounds

    def feature_threshold(self, task: str) -> tuple[str, float]:
        """The single-feature metric of ``task`` and the score at which a feature is a leak."""
        if task == "binary":
            return "roc_auc", self.feature_roc_auc
        if task == "multiclass":
            return "balanced_accuracy", self.feature_balanced_accuracy
        return "r2", self.feature_r2


class GateSettings(Section):
    """When a challenger becomes ``champion`` (see tasks/evaluation/gate.py).

    ``primary_metric``, ``floors`` and ``ceilings`` default per task (tasks/settings/problem.py: binary
    roc_auc with floor roc_auc 0.70 and no ceiling; multiclass log_loss; regression rmse with floor
    r2 0.0); the loaded settings hold the resolved values. Floors bound higher-is-better metrics, ceilings
    lower-is-better ones, of the dataset's task. ``leakage`` is the leakage guard (:class:`LeakageSettings`).
    """

    primary_metric: str | None = None
    floors: dict[str, float] | None = None  # minimums
    ceilings: dict[str, float] | None = None  # maximums
    min_delta: float = Field(default=0.002, ge=0)  # required improvement of the primary metric
    bootstrap_samples: int = Field(default=1000, ge=100)
    bootstrap_seed: int = 0
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    max_slice_drop: float = Field(default=0.05, ge=0)  # in units of the primary metric
    min_slice_rows: int = Field(default=200, ge=1)
    slice_features: list[str] | None = None  # categorical features; None: all of them
    leakage: LeakageSettings = Field(default_factory=LeakageSettings)


class RolloutSettings(Section):
    """How ``rollout`` builds, starts and switches serving deployments (see tasks.rollout)."""

    target: Literal["process", "docker"] = "process"  # process: a local `bentoml serve`; docker: a container
    after_promotion: bool = True  # a promotion starts the rollout deployment (package -> test-serve -> switch)
    deployment: str | None = None  # the deployment a promotion starts; None: rollout/<project_name>-on-demand
    # The stable URL http://127.0.0.1:<port>; None: derived from project_name (3080 for the default project)
    endpoint_port: int | None = Field(default=None, ge=1024, le=65535)
    readiness_timeout_seconds: float = Field(default=180.0, gt=0)  # candidate start -> /readyz answers 200
    lease_seconds: float = Field(default=120.0, ge=3)  # one rollout at a time: its lease, renewed every third
    drain_seconds: float = Field(default=30.0, ge=0)  # longest wait for in-flight requests after a switch
    stop_grace_seconds: float = Field(default=20.0, ge=0)  # SIGTERM -> SIGKILL for a retired backend
    proxy_read_timeout_seconds: float = Field(default=60.0, gt=0)  # the endpoint's wait for a backend answer
    # A request whose connection to the backend failed (refused, or reset before an answer: a serving worker
    # killed) is sent again by the endpoint, up to this many times: predictions are safe to repeat, and the
    # backend's other worker (serving.workers >= 2) or its replacement answers. 0: no retry.
    endpoint_retries: int = Field(default=2, ge=0, le=10)
    workers: int = Field(default=2, ge=1, le=64)  # serving workers of each rolled-out backend (its serving.workers)
    # Client keep-alive at the stable endpoint. 0: every response closes its connection, so no request can
    # be caught by a switch. > 0: keep-alive; a request sent on an idle connection at the instant a switch
    # closes it fails (tasks/rollout/endpoint.py; measured: 33 of 31,579 requests over 150 switches)
    endpoint_keepalive_seconds: float = Field(default=0.0, ge=0)
    image_name: str = Field(default="mlcycle-serving", pattern=r"^[a-z0-9][a-z0-9._/-]*$")
    base_image: str = "local/python-base:bookworm"  # FROM of the serving image
    build_base_image: bool = True  # build base_image from Debian packages when missing (else: docker pull)
    debian_mirror: str = "http://deb.debian.org/debian"  # debootstrap's mirror for the base image
    start_engine: bool = True  # start dockerd (infra/docker-engine.sh) when no Docker engine answers
    wheelhouse_dir: Path | None = None  # wheels the image installs offline; None: <home>/cache/wheelhouse


class InferenceLogSettings(Section):
    """The service's inference log (see tasks.inference_log): batched Parquet parts, off the request path."""

    enabled: bool = True
    queue_rows: int = Field(default=200_000, ge=1)  # predictions held in memory; beyond: dropped and counted
    flush_rows: int = Field(default=20_000, ge=1)  # write a part when this many rows are queued...
    flush_interval_seconds: float = Field(default=5.0, gt=0)  # ...or when this much time has passed
    upload_attempts: int = Field(default=3, ge=1)  # per part, with exponential backoff, before spilling
    spill_dir: Path | None = None  # parts kept here while the store is down; None: <home>/inference-spill
    # each answered request is appended to a journal under spill_dir/journal before its answer leaves, so
    # a worker killed between two flushes loses none (replayed by the next worker); false: memory only
    journal: bool = True


class ServingSettings(Section):
    """The BentoML service, its packaging and test-serving (see bentos/service.py, tasks.serving)."""

    # The bentos' name (tagged <bento_name>:v<version>-<hash>); None: <project_name>-model, made a BentoML name
    bento_name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    host: str = "127.0.0.1"  # `mlcycle serve` binds here
    # `mlcycle serve` default port (0: any free port); None: from project_name (3000 for the default project)
    port: int | None = Field(default=None, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)  # service processes (each loads the model)
    model_threads: int = Field(default=1, ge=1)  # OpenMP/BLAS threads per worker for the pipeline
    threshold: float | None = Field(default=None, gt=0, lt=1)  # None: the model's own (training.threshold)
    timeout_seconds: float = Field(default=30.0, gt=0)  # a request still running after this gets 504
    max_concurrency: int | None = Field(default=None, ge=1)  # BentoML's own limit per service; beyond: 429
    # Admission control per worker (bentos/runtime.py RequestGuard): API requests in flight beyond this get
    # an immediate 503 with Retry-After instead of queueing into timeouts; None: no limit
    max_in_flight: int | None = Field(default=512, ge=1)
    retry_after_seconds: int = Field(default=1, ge=0)  # the Retry-After of those 503s
    max_records: int = Field(default=1_000, ge=1)  # records per /predict request
    max_batch_request_rows: int = Field(default=100_000, ge=1)  # rows per /predict_batch request
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)  # larger request bodies get 413
    max_batch_rows: int = Field(default=20_000, ge=1)  # adaptive batching: rows per pipeline call
    batch_wait_ms: float = Field(default=3.0, ge=0, le=1000)  # under load, wait this long to fill a batch
    access_log: bool = False  # BentoML's per-request access log (costs ~10% throughput)
    # Python's cyclic GC in each service worker: once the model is loaded, everything allocated so far is frozen
    # (gc.freeze: never scanned again) and a young collection waits for this many new objects instead of 700;
    # the full collections over the loaded heap were the single-row p99 stalls (benchmarks/README.md). 0: Python's
    # defaults, nothing frozen.
    gc_threshold: int = Field(default=50_000, ge=0)
    trace_requests: bool = False  # OpenTelemetry spans for API requests (~0.4 ms each; needs an exporter)
    canary_rows: int = Field(default=200, ge=1)  # test-serving: rows of the test window sent as canaries
    canary_tolerance: float = Field(default=1e-9, ge=0)  # |served - in-process| (regression: over max(1, |value|))
    latency_budget_ms: float = Field(default=250.0, gt=0)  # test-serving: p95 of single-row /predict
    latency_requests: int = Field(default=50, ge=5)  # single-row requests timed for the budget
    readiness_timeout_seconds: float = Field(default=180.0, gt=0)  # `bentoml serve` start -> /readyz 200
    build_timeout_seconds: float = Field(default=600.0, gt=0)  # `bentoml build`
    bentoml_home: Path | None = None  # BentoML's model and bento store; None: <home>/bentoml
    inference_log: InferenceLogSettings = Field(default_factory=InferenceLogSettings)


class MonitorSettings(Section):
    """The monitoring flow: which window it reads and the guard rails around the retraining trigger."""

    window_hours: int = Field(default=24, ge=1)
    performance_metric: str | None = None  # compared with the champion's test value; None: the gate's metric
    performance_tolerance: float = 0.05  # drop of the live metric below the champion's test metric
    min_labelled_rows: int = Field(default=200, ge=1)
    cooldown_hours: float = Field(default=24.0, ge=0)
    train_deployment: str | None = None  # the deployment a retraining starts; None: train/<project_name>-on-demand
    trigger_claim_seconds: float = Field(default=600.0, ge=1)  # a claimed trigger not started by then is freed
    estimation: EstimationSettings = Field(default_factory=EstimationSettings)


class GcSettings(Section):
    """The sweep of unreachable leftovers (tasks/gc.py): `mlcycle gc`, and a step of every monitor run."""

    min_age_hours: float = Field(default=24.0, ge=0)  # only leftovers older than this are removed
    in_monitor: bool = True  # the monitor flow sweeps after its report (its failure never fails the monitor)


class DaskSettings(Section):
    """The one place to point mlcycle at a Dask cluster (see tasks/runners.py).

    With ``address`` set, the backfill's per-date work and the monitor's per-feature drift run as Prefect
    tasks on that cluster (prefect-dask's DaskTaskRunner), and the training search uses joblib's Dask
    backend on it (unless ``training.dask_scheduler`` names another scheduler). Unset: nothing imports Dask.
    """

    address: str | None = None  # tcp://host:8786 (env MLCYCLE_DASK__ADDRESS); None: run in-process
    connect_timeout_seconds: float = Field(default=10.0, gt=0)  # unreachable scheduler -> error after this

    @field_validator("address")
    @classmethod
    def _empty_is_unset(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None


class RetryPolicy(Section):
    """How one stage's tasks ride out a transient object-store fault (see tasks/retry.py).

    A task that failed with ``StoreUnavailable`` runs again up to ``retries`` times, waiting
    ``delay_seconds``, then twice that, four times that, ...; any other failure is final at once.
    """

    retries: int = Field(default=3, ge=0)
    delay_seconds: float = Field(default=2.0, ge=0)  # the first wait; each next one doubles


class RetriesSettings(Section):
    """One retry policy per stage that retries, so one stage's settings never drive another's."""

    ingest: RetryPolicy = Field(default_factory=RetryPolicy)  # flows ingest, validate, backfill
    training: RetryPolicy = Field(default_factory=RetryPolicy)  # flow train
    packaging: RetryPolicy = Field(default_factory=RetryPolicy)  # flow package
    monitoring: RetryPolicy = Field(default_factory=RetryPolicy)  # flows monitor, monitor-drift-features
