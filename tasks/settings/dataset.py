"""The dataset declaration (``dataset:`` in mlcycle.yaml), and what every settings section shares.

The declaration is the single source from which the validation suite, the model input schema, the
serving request schema and the drift monitor are derived: those stages name no column of their own.
Only the simulator, which generates the demo ``loans`` data, knows that dataset's columns.

What every section shares (:class:`Section`, :class:`ConfigError`) is in tasks/settings/base.py.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import ValidationError, field_validator, model_validator

from mlcycle.tasks.settings.base import ConfigError, Section

# A category value as the config, the data or a request may write it; compared through its canonical text
# (tasks/settings/problem.py: category_key), which is what the declaration keeps.
CategoryValue = bool | int | float | str


class FeatureSpec(Section):
    """One model input. Numeric features carry a range, categorical ones their allowed categories.

    ``categories`` may be written as strings, numbers or booleans (``[0, 1]``, ``[true, false]``); they are
    kept as their canonical texts (``["0", "1"]``), the form validation, training and serving compare.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    dtype: Literal["float", "int", "str"] = "float"
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    nullable: bool = False
    critical: bool = False  # a drift in a critical feature alone is a dataset-level drift
    description: str = ""

    @field_validator("categories", mode="before")
    @classmethod
    def _category_texts(cls, values: Any) -> Any:
        from mlcycle.tasks.settings.problem import category_keys

        if isinstance(values, list | tuple):
            return category_keys(list(values), "categories")
        return values

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
    """The dataset: identity, time, target and features, with the checks every batch must pass.

    ``task`` says what the target is (tasks/settings/problem.py): ``binary`` (``classes``, default ``[0, 1]``,
    one of them ``positive_label``), ``multiclass`` (``classes`` declared) or ``regression`` (a number,
    optionally within ``target_min``/``target_max``). Class values, like categories, may be strings, numbers
    or booleans and are kept as canonical texts.
    """

    name: str = "loans"
    task: Literal["binary", "multiclass", "regression"] = "binary"
    # no default names a demo column (only tasks/simulator.py knows the demo dataset): the target is declared
    id_column: str = "id"
    timestamp_column: str = "timestamp"
    target: str
    positive_label: str = "1"  # binary: the class whose probability the model outputs
    classes: list[str] | None = None  # binary: default [0, 1]; multiclass: required
    target_min: float | None = None  # regression: the target's declared range (validation checks it)
    target_max: float | None = None
    features: list[FeatureSpec]
    min_rows_per_batch: int = 1
    max_rows_per_batch: int = 5_000_000

    @field_validator("features", mode="before")
    @classmethod
    def _features_named_in_errors(cls, features: Any) -> Any:
        """Validate each feature here, so an error names the feature (``features[smoker].categories``)
        rather than its position in the list."""
        if not isinstance(features, list):
            return features
        out = []
        for i, feature in enumerate(features):
            if isinstance(feature, FeatureSpec):
                out.append(feature)
                continue
            name = feature.get("name") if isinstance(feature, dict) else None
            try:
                out.append(FeatureSpec.model_validate(feature))
            except ValidationError as exc:
                where = f"features[{name}]" if name else f"features[{i}]"
                problems = "; ".join(
                    f"{where}{''.join('.' + str(p) for p in err['loc'] if not isinstance(p, int))}: "
                    f"{err['msg'].removeprefix('Value error, ')}" for err in exc.errors())
                raise ValueError(problems) from None
        return out

    @field_validator("positive_label", mode="before")
    @classmethod
    def _label_text(cls, value: Any) -> Any:
        from mlcycle.tasks.settings.problem import category_key

        return category_key(value) if value is not None else value

    @field_validator("classes", mode="before")
    @classmethod
    def _class_texts(cls, values: Any) -> Any:
        from mlcycle.tasks.settings.problem import category_keys

        if isinstance(values, list | tuple):
            return category_keys(list(values), "classes")
        return values

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

    @model_validator(mode="after")
    def _target_fits_the_task(self) -> DatasetSpec:
        if self.task == "regression":
            if self.classes is not None:
                raise ValueError("classes: a regression target has no classes (declare target_min/target_max)")
            if self.target_min is not None and self.target_max is not None and self.target_min > self.target_max:
                raise ValueError(f"target_min {self.target_min} is above target_max {self.target_max}")
            return self
        if self.target_min is not None or self.target_max is not None:
            raise ValueError(f"target_min/target_max: a {self.task} target has classes, not a range")
        if self.task == "multiclass":
            if not self.classes or len(self.classes) < 3:
                raise ValueError("classes: a multiclass target declares its classes (at least 3; with two, "
                                 "use task: binary)")
            return self
        classes = self.classes or ["0", "1"]
        if len(classes) != 2:
            raise ValueError(f"classes: a binary target has exactly two classes, got {classes}")
        if self.positive_label not in classes:
            raise ValueError(f"positive_label {self.positive_label!r} is not one of the classes {classes}")
        return self

    @property
    def class_labels(self) -> list[str] | None:
        """The target's classes as canonical texts (binary: default ``["0", "1"]``); None for regression."""
        if self.task == "regression":
            return None
        return list(self.classes or ["0", "1"])

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
