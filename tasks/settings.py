"""The one configuration model of mlcycle.

Sources, highest priority first:
  1. keyword arguments (tests, the CLI),
  2. environment variables ``MLCYCLE_*`` (nested sections with ``__``: ``MLCYCLE_SIMULATOR__SEED=7``),
  3. the project config file (``mlcycle.yaml`` in the working directory, or ``MLCYCLE_CONFIG``),
  4. the defaults declared here.

The dataset declaration (``dataset:``) is the single source from which the validation suite, the model
input schema, the serving request schema and the drift monitor are derived. Nothing else in the code
base names a column.

Settings are read once at the edge (CLI, flow entry) through :func:`get_settings` and passed down; no
module reads the environment on its own. Secrets (S3 keys, the API token) are ``SecretStr``: they never
appear in ``repr``, logs, manifests or artifacts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_ENV = "MLCYCLE_CONFIG"
DEFAULT_CONFIG_FILE = "mlcycle.yaml"
# Secret files (Docker/Kubernetes convention): one file per secret, named like its variable
# (mlcycle_api_token, mlcycle_s3_access_key, ...); read when the folder exists, below the environment.
SECRETS_DIR_ENV = "MLCYCLE_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/run/secrets"


class ConfigError(ValueError):
    """The configuration is inconsistent; the message names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------------
# The dataset declaration
# --------------------------------------------------------------------------------------------------


class FeatureSpec(_Section):
    """One model input. Numeric features carry a range, categorical ones their allowed categories."""

    name: str
    kind: Literal["numeric", "categorical"]
    dtype: Literal["float", "int", "str"] = "float"
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    nullable: bool = False
    critical: bool = False  # a drift in a critical feature alone is a dataset-level drift
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.kind == "categorical":
            if not self.categories:
                raise ValueError(f"categorical feature {self.name!r} must declare its categories")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"categorical feature {self.name!r} lists a category twice")
            if self.min is not None or self.max is not None:
                raise ValueError(f"categorical feature {self.name!r} cannot have min/max")
            self.dtype = "str"
        else:
            if self.categories:
                raise ValueError(f"numeric feature {self.name!r} cannot have categories")
            if self.dtype == "str":
                raise ValueError(f"numeric feature {self.name!r} must have dtype float or int")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"feature {self.name!r}: min {self.min} is above max {self.max}")
        return self


class DatasetSpec(_Section):
    """The dataset: identity, time, target and features, with the checks every batch must pass."""

    name: str = "loans"
    id_column: str = "application_id"
    timestamp_column: str = "applied_at"
    target: str = "defaulted"
    positive_label: int = 1
    features: list[FeatureSpec]
    min_rows_per_batch: int = 1
    max_rows_per_batch: int = 5_000_000

    @model_validator(mode="after")
    def _unique_names(self) -> DatasetSpec:
        names = self.columns
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"dataset {self.name!r} declares column(s) {dupes} more than once")
        if not self.features:
            raise ValueError(f"dataset {self.name!r} declares no features")
        if self.min_rows_per_batch < 1 or self.max_rows_per_batch < self.min_rows_per_batch:
            raise ValueError("dataset row bounds must satisfy 1 <= min_rows_per_batch <= max_rows_per_batch")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def numeric_features(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.kind == "numeric"]

    @property
    def categorical_features(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.kind == "categorical"]

    @property
    def columns(self) -> list[str]:
        """Every column of a batch, in canonical order."""
        return [self.id_column, self.timestamp_column, *self.feature_names, self.target]

    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise ConfigError(f"dataset {self.name!r} has no feature {name!r}; features are {self.feature_names}")

    def schema_hash(self) -> str:
        """A stable hash of the declaration: models and partitions record it as lineage."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Sections of the life cycle
# --------------------------------------------------------------------------------------------------


class DriftEvent(_Section):
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


class SimulatorSettings(_Section):
    seed: int = 42
    rows_per_day: int = 2_000
    drift: list[DriftEvent] = Field(default_factory=list)


class IngestSettings(_Section):
    source: Literal["simulator", "landing"] = "simulator"
    backfill_concurrency: int = Field(default=4, ge=1, le=64)
    retries: int = Field(default=3, ge=0)
    retry_delay_seconds: float = Field(default=2.0, ge=0)


class ValidationSettings(_Section):
    result_format: Literal["BOOLEAN_ONLY", "BASIC", "SUMMARY", "COMPLETE"] = "SUMMARY"
    build_data_docs: bool = True


class DemoSettings(_Section):
    start: dt.date = dt.date(2026, 10, 1)
    days: int = 14
    rollout_timeout_seconds: float = Field(default=900.0, gt=0)  # the promotion's rollout must be live by then
    inference_log_timeout_seconds: float = Field(default=60.0, gt=0)  # the traffic sent must be logged by then


# Training and the evaluation gate ------------------------------------------------------------------

# Estimators a model family may name (tasks.features maps each to its scikit-learn class).
EstimatorName = Literal["logistic_regression", "hist_gradient_boosting"]
# Metrics the evaluation computes; the gate may use any of them.
HIGHER_IS_BETTER = ("roc_auc", "pr_auc", "f1", "recall", "precision")
LOWER_IS_BETTER = ("log_loss", "brier")


class ParamSpace(_Section):
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


class ModelFamily(_Section):
    """A model family: which estimator, fixed parameters, and the space the search samples from."""

    estimator: EstimatorName
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
    }


class TrainingSettings(_Section):
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

    @property
    def resolved_backend(self) -> str:
        return "dask" if self.dask_scheduler else self.joblib_backend


class GateSettings(_Section):
    """When a challenger becomes ``champion`` (see tasks.evaluation.apply_gate)."""

    primary_metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "roc_auc"
    floors: dict[str, float] = Field(default_factory=lambda: {"roc_auc": 0.70})  # minimums
    ceilings: dict[str, float] = Field(default_factory=lambda: {"brier": 0.20})  # maximums
    min_delta: float = Field(default=0.002, ge=0)  # required improvement of the primary metric
    bootstrap_samples: int = Field(default=1000, ge=100)
    bootstrap_seed: int = 0
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    max_slice_drop: float = Field(default=0.05, ge=0)  # in units of the primary metric
    min_slice_rows: int = Field(default=200, ge=1)
    slice_features: list[str] | None = None  # categorical features; None: all of them

    @model_validator(mode="after")
    def _metric_directions(self) -> GateSettings:
        for key, allowed, kind in (("floors", HIGHER_IS_BETTER, "higher"), ("ceilings", LOWER_IS_BETTER, "lower")):
            for metric in getattr(self, key):
                if metric not in allowed:
                    raise ValueError(f"gate.{key} names {metric!r}; {key} apply to {kind}-is-better metrics "
                                     f"{list(allowed)}")
        return self


class RolloutSettings(_Section):
    """How ``rollout`` builds, starts and switches serving deployments (see tasks.rollout)."""

    target: Literal["process", "docker"] = "process"  # process: a local `bentoml serve`; docker: a container
    after_promotion: bool = True  # a promotion starts the rollout deployment (package -> test-serve -> switch)
    deployment: str = "rollout/on-demand"  # the deployment a promotion starts
    endpoint_port: int = Field(default=3080, ge=1024, le=65535)  # the stable URL http://127.0.0.1:<port>
    readiness_timeout_seconds: float = Field(default=180.0, gt=0)  # candidate start -> /readyz answers 200
    drain_seconds: float = Field(default=30.0, ge=0)  # longest wait for in-flight requests after a switch
    stop_grace_seconds: float = Field(default=20.0, ge=0)  # SIGTERM -> SIGKILL for a retired backend
    proxy_read_timeout_seconds: float = Field(default=60.0, gt=0)  # the endpoint's wait for a backend answer
    # Client keep-alive at the stable endpoint. 0: every response closes its connection, so no request can
    # be caught by a switch. > 0: keep-alive; a request sent on an idle connection at the instant a switch
    # closes it fails (tasks/endpoint.py; measured: 33 of 31,579 requests over 150 switches)
    endpoint_keepalive_seconds: float = Field(default=0.0, ge=0)
    image_name: str = Field(default="mlcycle-serving", pattern=r"^[a-z0-9][a-z0-9._/-]*$")
    base_image: str = "local/python-base:bookworm"  # FROM of the serving image
    build_base_image: bool = True  # build base_image from Debian packages when missing (else: docker pull)
    debian_mirror: str = "http://deb.debian.org/debian"  # debootstrap's mirror for the base image
    start_engine: bool = True  # start dockerd (infra/docker-engine.sh) when no Docker engine answers
    wheelhouse_dir: Path | None = None  # wheels the image installs offline; None: <home>/cache/wheelhouse


class InferenceLogSettings(_Section):
    """The service's inference log (see tasks.inference_log): batched Parquet parts, off the request path."""

    enabled: bool = True
    queue_rows: int = Field(default=200_000, ge=1)  # predictions held in memory; beyond: dropped and counted
    flush_rows: int = Field(default=20_000, ge=1)  # write a part when this many rows are queued...
    flush_interval_seconds: float = Field(default=5.0, gt=0)  # ...or when this much time has passed
    upload_attempts: int = Field(default=3, ge=1)  # per part, with exponential backoff, before spilling
    spill_dir: Path | None = None  # parts kept here while the store is down; None: <home>/inference-spill


class ServingSettings(_Section):
    """The BentoML service, its packaging and test-serving (see bentos/service.py, tasks.serving)."""

    bento_name: str = Field(default="mlcycle-model", pattern=r"^[a-z0-9][a-z0-9._-]*$")
    host: str = "127.0.0.1"  # `mlcycle serve` binds here
    port: int = Field(default=3000, ge=0, le=65535)  # `mlcycle serve` default port (0: any free port)
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
    trace_requests: bool = False  # OpenTelemetry spans for API requests (~0.4 ms each; needs an exporter)
    canary_rows: int = Field(default=200, ge=1)  # test-serving: rows of the test window sent as canaries
    canary_tolerance: float = Field(default=1e-9, ge=0)  # |served - in-process probability| allowed
    latency_budget_ms: float = Field(default=250.0, gt=0)  # test-serving: p95 of single-row /predict
    latency_requests: int = Field(default=50, ge=5)  # single-row requests timed for the budget
    readiness_timeout_seconds: float = Field(default=180.0, gt=0)  # `bentoml serve` start -> /readyz 200
    build_timeout_seconds: float = Field(default=600.0, gt=0)  # `bentoml build`
    bentoml_home: Path | None = None  # BentoML's model and bento store; None: <home>/bentoml
    inference_log: InferenceLogSettings = Field(default_factory=InferenceLogSettings)


class DriftSettings(_Section):
    """Drift decision thresholds; the defaults and their sources are documented in tasks/drift.py."""

    min_rows: int = Field(default=500, ge=1)  # below this many current rows: "not enough data"
    alpha: float = Field(default=0.05, gt=0, lt=1)  # false discovery rate (Benjamini-Hochberg)
    psi_threshold: float = 0.2
    wasserstein_threshold: float = 0.1  # Wasserstein-1 / reference standard deviation
    js_threshold: float = 0.05  # Jensen-Shannon distance, base 2
    unseen_threshold: float = 0.01  # share of rows with a category never seen in training
    null_rate_threshold: float = 0.05  # absolute change in the null rate
    prediction_psi_threshold: float = 0.2
    drift_share: float = Field(default=0.5, gt=0, le=1)  # share of drifted features for dataset drift
    reference_sample_size: int = Field(default=5000, ge=100)  # per numeric feature, kept in the profile


class MonitorSettings(_Section):
    """The monitoring flow: which window it reads and the guard rails around the retraining trigger."""

    window_hours: int = Field(default=24, ge=1)
    performance_metric: str = "roc_auc"
    performance_tolerance: float = 0.05  # drop of the live metric below the champion's test metric
    min_labelled_rows: int = Field(default=200, ge=1)
    cooldown_hours: float = Field(default=24.0, ge=0)
    train_deployment: str = "train/on-demand"


class DaskSettings(_Section):
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


class Settings(BaseSettings):
    """Everything mlcycle reads, typed. See the module docstring for where values come from."""

    model_config = SettingsConfigDict(
        env_prefix="MLCYCLE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    home: Path = Path(".mlcycle")
    project_name: str = "mlcycle"

    # Object store ---------------------------------------------------------------------------------
    store: Literal["local", "minio"] = "local"
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    s3_bucket: str = "mlcycle"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    s3_timeout_seconds: float = 10.0
    landing_path: str | None = None  # a local folder, or s3://bucket/prefix
    # Bearer token the prediction endpoints require (MLCYCLE_API_TOKEN, or a secret file); None: open
    api_token: SecretStr | None = None

    dataset: DatasetSpec
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    dask: DaskSettings = Field(default_factory=DaskSettings)

    @field_validator("s3_endpoint")
    @classmethod
    def _bare_endpoint(cls, v: str) -> str:
        # The minio SDK wants host:port; accept a URL and say so if it has a path.
        for scheme in ("http://", "https://"):
            if v.startswith(scheme):
                v = v[len(scheme):]
        if "/" in v.rstrip("/"):
            raise ValueError(f"MLCYCLE_S3_ENDPOINT must be host[:port] without a path, got {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _drift_names_known_features(self) -> Settings:
        names = set(self.dataset.feature_names)
        for event in self.simulator.drift:
            if event.feature not in names:
                raise ValueError(
                    f"simulator.drift names unknown feature {event.feature!r}; features are "
                    f"{self.dataset.feature_names}"
                )
        return self

    @model_validator(mode="after")
    def _training_search_on_dask(self) -> Settings:
        """``dask.address`` is the training search's scheduler too, unless training names its own."""
        if self.dask.address and not self.training.dask_scheduler:
            self.training.dask_scheduler = self.dask.address
        return self

    @model_validator(mode="after")
    def _training_names_known(self) -> Settings:
        """Training and gate settings may only name families and features that exist."""
        t, names = self.training, self.dataset.feature_names
        if t.family not in t.families:
            raise ValueError(f"training.family {t.family!r} is not a configured family; families are "
                             f"{sorted(t.families)}")
        if t.features is not None:
            unknown = [f for f in t.features if f not in names]
            if unknown or not t.features:
                raise ValueError(f"training.features names unknown feature(s) {unknown}; features are {names}"
                                 if unknown else "training.features is empty; omit it to use every feature")
        categorical = [f.name for f in self.dataset.categorical_features]
        unknown = [f for f in self.gate.slice_features or [] if f not in categorical]
        if unknown:
            raise ValueError(f"gate.slice_features names {unknown}, not categorical features of the dataset; "
                             f"categorical features are {categorical}")
        return self

    @property
    def store_root(self) -> Path:
        return self.home / "store"

    @property
    def run_dir(self) -> Path:
        """Pid files and logs of what `mlcycle up` / `make demo` leave running."""
        return self.home / "run"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        secrets = Path(os.environ.get(SECRETS_DIR_ENV) or DEFAULT_SECRETS_DIR)
        if secrets.is_dir():  # (pydantic-settings warns on every load about a folder that is absent)
            from pydantic_settings import SecretsSettingsSource

            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets))
        if path is not None:
            sources.append(_NoSecretsYamlSource(settings_cls, yaml_file=path))
        return tuple(sources)


SECRET_FIELDS = ("api_token", "s3_access_key", "s3_secret_key")


class _NoSecretsYamlSource(YamlConfigSettingsSource):
    """The project config file, which must hold no secret: it is committed, and bundled into every bento.

    A secret there is refused with the key named; secrets come from ``MLCYCLE_*`` variables or from files
    in the secrets folder (``MLCYCLE_SECRETS_DIR``, default /run/secrets).
    """

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        found = [key for key in SECRET_FIELDS if data.get(key) not in (None, "")]
        if found:
            raise ConfigError(f"{', '.join(found)} set in the config file {self.yaml_file_path}: secrets must not be "
                              f"in it (it is committed and bundled into bentos); set "
                              f"{', '.join('MLCYCLE_' + k.upper() for k in found)} in the environment or a file "
                              f"in the secrets folder ({SECRETS_DIR_ENV})")
        return data


def config_path() -> Path | None:
    """The project config file: ``MLCYCLE_CONFIG`` if set (must exist), else ./mlcycle.yaml if present."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise ConfigError(f"{CONFIG_ENV}={explicit!r} does not name a file")
        return p
    p = Path(DEFAULT_CONFIG_FILE)
    return p if p.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning pydantic's validation error into a ConfigError naming each bad key."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        where = config_path() or "<no config file>"
        raise ConfigError(f"invalid mlcycle configuration ({where}): {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call ``get_settings.cache_clear()``."""
    return load_settings()
