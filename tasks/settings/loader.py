"""Where mlcycle's settings come from: :class:`Settings`, its sources, and the cached :func:`get_settings`.

Sources, highest priority first:
  1. keyword arguments (tests, the CLI),
  2. environment variables ``MLCYCLE_*`` (nested sections with ``__``: ``MLCYCLE_SIMULATOR__SEED=7``),
  3. secret files in the secrets folder (``MLCYCLE_SECRETS_DIR``, default /run/secrets), when it exists,
  4. the project config file (``mlcycle.yaml`` in the working directory, or ``MLCYCLE_CONFIG``),
  5. the defaults declared in tasks/settings/sections.py and dataset.py.

Settings are read once at the edge (CLI, flow entry) through :func:`get_settings` and passed down; no
module reads the environment on its own. Secrets (S3 keys, the API token) are ``SecretStr``: they never
appear in ``repr``, logs, manifests or artifacts, and the config file may not hold them. A bad value is a
:class:`~mlcycle.tasks.settings.dataset.ConfigError` naming each bad key (:func:`load_settings`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from mlcycle.tasks.settings.base import ConfigError
from mlcycle.tasks.settings.dataset import DatasetSpec
from mlcycle.tasks.settings.monitoring import DriftSettings
from mlcycle.tasks.settings.naming import derived_names, work_pool_name
from mlcycle.tasks.settings.sections import (
    DaskSettings,
    DemoSettings,
    GateSettings,
    GcSettings,
    IngestSettings,
    MonitorSettings,
    RetriesSettings,
    RolloutSettings,
    ServingSettings,
    SimulatorSettings,
    TrainingSettings,
    ValidationSettings,
)


def _key_segment(value: str, key: str) -> str:
    """``value`` if it can be one store key segment; else the reason, naming ``key``."""
    from mlcycle.tasks.storage.base import UnsafeKey, check_segment

    try:
        return check_segment(value, key)
    except UnsafeKey as exc:
        raise ValueError(str(exc)) from None


CONFIG_ENV = "MLCYCLE_CONFIG"
DEFAULT_CONFIG_FILE = "mlcycle.yaml"
# Secret files (Docker/Kubernetes convention): one file per secret, named like its variable
# (mlcycle_api_token, mlcycle_s3_access_key, ...); read when the folder exists, below the environment.
SECRETS_DIR_ENV = "MLCYCLE_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/run/secrets"


class Settings(BaseSettings):
    """Everything mlcycle reads, typed. See the module docstring for where values come from."""

    model_config = SettingsConfigDict(
        env_prefix="MLCYCLE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    home: Path = Path(".mlcycle")
    # The project's name: one key segment (letters, digits, ._=+-). The store keeps each project's objects
    # under it (store_prefix), so several projects can share one bucket or one MLCYCLE_HOME.
    project_name: str = "mlcycle"
    # Where this project's objects live in the store: every key under "<store_prefix>/" (local store: a
    # folder of MLCYCLE_HOME/store; S3: a key prefix in the bucket). None (the default): project_name.
    # "" keeps keys at the store's root, the layout of stores written before projects had prefixes.
    store_prefix: str | None = None

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
    gc: GcSettings = Field(default_factory=GcSettings)
    dask: DaskSettings = Field(default_factory=DaskSettings)
    retries: RetriesSettings = Field(default_factory=RetriesSettings)

    @field_validator("project_name")
    @classmethod
    def _project_is_a_key_segment(cls, v: str) -> str:
        return _key_segment(v, "project_name")

    @field_validator("store_prefix")
    @classmethod
    def _prefix_is_a_key_segment(cls, v: str | None) -> str | None:
        return v if v is None or v == "" else _key_segment(v, "store_prefix")

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
        """The simulator's drift schedule matters only when the simulator is the source."""
        if self.ingest.source != "simulator":
            return self
        names = set(self.dataset.feature_names)
        for event in self.simulator.drift:
            if event.feature not in names:
                raise ValueError(
                    f"simulator.drift names unknown feature {event.feature!r}; features are "
                    f"{self.dataset.feature_names} (the simulator section applies only to ingest.source: "
                    "simulator; with your own data set ingest.source: landing)"
                )
        return self

    @model_validator(mode="after")
    def _metrics_fit_the_task(self) -> Settings:
        """Resolve the gate's and the monitor's metrics for the dataset's task, and check every one named."""
        from mlcycle.tasks.settings.problem import (
            DEFAULT_CEILINGS,
            DEFAULT_FLOORS,
            DEFAULT_PRIMARY,
            HIGHER,
            LOWER,
            METRICS,
        )

        task, gate = self.dataset.task, self.gate
        known = METRICS[task]
        if gate.primary_metric is None:
            gate.primary_metric = DEFAULT_PRIMARY[task]
        if gate.floors is None:
            gate.floors = dict(DEFAULT_FLOORS[task])
        if gate.ceilings is None:
            gate.ceilings = dict(DEFAULT_CEILINGS[task])
        if self.monitor.performance_metric is None:
            self.monitor.performance_metric = gate.primary_metric
        for key, metric in (("gate.primary_metric", gate.primary_metric),
                            ("monitor.performance_metric", self.monitor.performance_metric)):
            if metric not in known:
                raise ValueError(f"{key} {metric!r} is not a {task} metric; {task} metrics are {sorted(known)}")
        for key, wanted, kind in (("floors", HIGHER, "higher"), ("ceilings", LOWER, "lower")):
            for metric in getattr(gate, key):
                if known.get(metric) != wanted:
                    allowed = sorted(m for m, d in known.items() if d == wanted)
                    raise ValueError(f"gate.{key} names {metric!r}; for a {task} task {key} apply to "
                                     f"{kind}-is-better metrics {allowed}")
        return self

    @model_validator(mode="after")
    def _names_from_the_project(self) -> Settings:
        """The deployments a promotion and a retraining start, and the stable endpoint's port: from
        project_name unless set (tasks/settings/naming.py)."""
        for section, key, value in derived_names(self.project_name):
            if getattr(getattr(self, section), key) is None:
                setattr(getattr(self, section), key, value)
        return self

    @property
    def work_pool(self) -> str:
        """The Prefect work pool this project's deployments run on (``<project_name>-process``)."""
        return work_pool_name(self.project_name)

    @model_validator(mode="after")
    def _training_search_on_dask(self) -> Settings:
        """``dask.address`` is the training search's scheduler too, unless training names its own."""
        if self.dask.address and not self.training.dask_scheduler:
            self.training.dask_scheduler = self.dask.address
        return self

    @model_validator(mode="after")
    def _training_names_known(self) -> Settings:
        """Training and gate settings may only name families and features that exist."""
        from mlcycle.tasks.settings.problem import ESTIMATOR_ALIASES, estimator_class, estimator_path

        t, names = self.training, self.dataset.feature_names
        if t.family not in t.families:
            raise ValueError(f"training.family {t.family!r} is not a configured family; families are "
                             f"{sorted(t.families)}")
        for name, family in t.families.items():
            try:
                if name == t.family:  # the family in use: fits the task (an import path is imported and checked)
                    estimator_path(family.estimator, self.dataset.task)
                    if family.estimator not in ESTIMATOR_ALIASES:
                        estimator_class(family.estimator, self.dataset.task)
                elif family.estimator not in ESTIMATOR_ALIASES:  # any other: at least a well-formed import path
                    estimator_path(family.estimator, self.dataset.task)
            except ConfigError as exc:
                raise ValueError(f"training.families.{name}.estimator: {exc}") from None
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
    def store_scope(self) -> str:
        """The prefix every key of this project's store lives under ("" for the store's root)."""
        return self.project_name if self.store_prefix is None else self.store_prefix

    @property
    def store_root(self) -> Path:
        """The local store's folder: this project's part of ``MLCYCLE_HOME/store``."""
        return self.home / "store" / self.store_scope if self.store_scope else self.home / "store"

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
