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

    dataset: DatasetSpec
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)

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
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


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
