"""The dataset declaration (``dataset:`` in mlcycle.yaml), and what every settings section shares.

The declaration is the single source from which the validation suite, the model input schema, the
serving request schema and the drift monitor are derived: those stages name no column of their own.
Only the simulator, which generates the demo ``loans`` data, knows that dataset's columns.

:class:`Section` is the base of every settings section (unknown keys are refused); :class:`ConfigError`
is what an inconsistent configuration raises, naming the offending key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator


class ConfigError(ValueError):
    """The configuration is inconsistent; the message names the offending key."""


class Section(BaseModel):
    """A settings section: a key it does not declare is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class FeatureSpec(Section):
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


class DatasetSpec(Section):
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
