"""The serving contract: request and response models generated from the dataset declaration.

Nothing here names a column. :func:`build_schema` turns a :class:`~tasks.settings.DatasetSpec` (and the
features a model reads) into the pydantic models the service declares, so the OpenAPI document, the
validation and the error messages all follow ``mlcycle.yaml``:

* **numeric** features are JSON numbers (strict: ``"42"`` and ``true`` are refused), finite (``NaN``
  and ``Infinity`` are refused), within ``[min, max]``; ``int`` features must be whole numbers, written
  ``41`` or ``41.0`` (JSON does not tell them apart, and the validation suite accepts a float column of
  whole numbers, which is what a nullable integer column becomes in pandas; ``41.5`` is refused);
* **categorical** features are one of the declared categories, sent as a string, a number or a boolean:
  the value is normalised to its canonical text (``tasks.settings.problem.category_key``: ``1``, ``1.0``
  and ``"1"`` are category ``"1"``, ``true`` is ``"true"``) *before* the membership check, the same
  normalisation validation and training apply; the error lists the declared categories, and the OpenAPI
  document lists every accepted form (``"1"`` and ``1``);
* **nullable** features may be ``null`` or left out; every other feature is required;
* the dataset's id column may be sent (a string, kept in the inference log); any other key is refused,
  so a misspelt feature never silently becomes a missing value.

``/predict`` takes ``{"records": [{feature: value, ...}, ...]}`` (1 to ``serving.max_records``);
``/predict_batch`` takes the column-oriented form ``{"columns": {feature: [values...], ...}}`` (what
``DataFrame.to_dict(orient="list")`` gives; up to ``serving.max_batch_request_rows`` rows), which is
about three times smaller and faster to validate than records.

:func:`error_message` renders pydantic errors as ``records.0.age: Input should be less than or equal to
100``: the field path and the problem, one clause per error.

Pure: pydantic, numpy and pandas only (the service imports it; no Prefect, no BentoML).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, create_model, model_validator

from mlcycle.tasks.settings import DatasetSpec, FeatureSpec
from mlcycle.tasks.settings.problem import category_key

ID_MAX_LENGTH = 128


# --------------------------------------------------------------------------------------------------
# what a served model is (stored in the BentoML model by tasks.serving.packaging.import_model)
# --------------------------------------------------------------------------------------------------


class LineageSummary(BaseModel):
    """Where the served model came from, in a few lines (the registry holds the whole lineage)."""

    dataset: str
    dataset_schema_hash: str
    window: str
    partitions: list[str]  # validated dates the model was trained on
    code_version: str
    trained_at: dt.datetime
    family: str
    metrics: dict[str, float | None]
    gate: str


class ServedModel(BaseModel):
    """The model a bento serves: registry identity, the artifact's sha256, its input declaration."""

    name: str  # registry model name
    version: int  # registry version
    model_sha256: str  # of model.joblib, as recorded by the registry
    model_file: str = "model.joblib"
    threshold: float  # the decision threshold the model was evaluated with (binary)
    features: list[str]  # the columns the pipeline reads, in order
    dataset: DatasetSpec  # the declaration the request schema is generated from
    # what the model predicts (tasks/predictions.py); defaults: a model imported before tasks existed
    task: Literal["binary", "multiclass", "regression"] = "binary"
    classes: list[str] | None = None  # classification: the classes as canonical texts, in served order
    positive_label: str | None = None  # binary: the class whose probability is served
    lineage: LineageSummary
    registry_uri: str  # where the version lives in the object store

    def feature_specs(self) -> list[FeatureSpec]:
        return [self.dataset.feature(n) for n in self.features]


# --------------------------------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------------------------------


def feature_type(f: FeatureSpec, *, in_list: bool = False) -> Any:
    """The annotated pydantic type of one feature value."""
    if f.kind == "categorical":
        categories = list(f.categories or ())
        value: Any = Annotated[Literal[tuple(categories)], BeforeValidator(_category_text),
                               WithJsonSchema({"enum": accepted_forms(categories)})]
    elif f.dtype == "int":
        value = Annotated[int, Field(strict=True, ge=f.min, le=f.max), BeforeValidator(_whole_float_as_int)]
    else:
        value = Annotated[float, Field(strict=True, ge=f.min, le=f.max, allow_inf_nan=False)]
    return value | None if f.nullable else value


def _category_text(value: Any) -> Any:
    """A string, number or boolean -> its canonical category text; anything else goes on to the membership
    check unchanged (and is refused there, naming the declared categories)."""
    if type(value) is str:
        return value
    if isinstance(value, bool | int | float):
        try:
            key = category_key(value)
        except ValueError:  # an infinity
            return value
        return value if key is None else key  # NaN is not a category (nor "missing": that is null)
    return value


def accepted_forms(categories: list[str]) -> list[Any]:
    """Every JSON value that is one of ``categories``: each text, and the number or boolean whose canonical
    text it is (``"1"`` -> ``"1"`` and ``1``; ``"true"`` -> ``"true"`` and ``true``; ``"north"`` -> itself)."""
    forms: list[Any] = []
    for text in categories:
        forms.append(text)
        candidates: list[Any] = [True, False] if text in ("true", "false") else []
        for parse in (int, float):
            with contextlib.suppress(ValueError):
                candidates.append(parse(text))
        for candidate in candidates:
            try:
                same = category_key(candidate) == text
            except ValueError:
                same = False
            if same:
                forms.append(candidate)
                break
    return forms


def _whole_float_as_int(value: Any) -> Any:
    """``41.0`` -> ``41`` (a whole number); anything else goes on to the strict integer check."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _describe(f: FeatureSpec) -> str:
    if f.kind == "categorical":
        what = f"one of {', '.join(f.categories or [])}"
    else:
        what = f"{f.dtype} in [{_num(f.min, '-inf')}, {_num(f.max, 'inf')}]"
    text = f"{what}{'; may be null' if f.nullable else ''}"
    return f"{f.description} ({text})" if f.description else text


def _num(x: float | None, unbounded: str) -> str:
    if x is None:
        return unbounded
    return str(int(x)) if float(x).is_integer() else str(x)


def record_model(spec: DatasetSpec, features: list[FeatureSpec]) -> type[BaseModel]:
    """One record of ``/predict``: every feature typed and checked; the id column optional."""
    fields: dict[str, Any] = {
        spec.id_column: (str | None, Field(default=None, max_length=ID_MAX_LENGTH,
                                           description=f"optional {spec.id_column}, kept in the inference log")),
    }
    for f in features:
        default = None if f.nullable else ...
        fields[f.name] = (feature_type(f), Field(default=default, description=_describe(f)))
    return create_model(f"{_camel(spec.name)}Record", __config__=ConfigDict(extra="forbid"), **fields)


def columns_model(spec: DatasetSpec, features: list[FeatureSpec], max_rows: int) -> type[BaseModel]:
    """The column-oriented batch of ``/predict_batch``: one list per feature, all of the same length."""
    fields: dict[str, Any] = {
        spec.id_column: (list[Annotated[str, Field(max_length=ID_MAX_LENGTH)] | None] | None,
                         Field(default=None, max_length=max_rows, description=f"optional {spec.id_column} per row")),
    }
    for f in features:
        fields[f.name] = (list[feature_type(f)], Field(min_length=1, max_length=max_rows, description=_describe(f)))
    model = create_model(f"{_camel(spec.name)}Columns", __config__=ConfigDict(extra="forbid"),
                         __validators__={"_same_length": model_validator(mode="after")(_same_length)}, **fields)
    return model


def _same_length(self: BaseModel) -> BaseModel:
    lengths = {name: len(v) for name, v in self if v is not None}
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths))
        odd = {k: n for k, n in lengths.items() if n != lengths[first]}
        raise ValueError(f"every column must have the same length: {first} has {lengths[first]} values, "
                         + ", ".join(f"{k} has {n}" for k, n in odd.items()))
    return self


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_") if part) or "Dataset"


# --------------------------------------------------------------------------------------------------
# what the service says about itself (the prediction answers per task are in tasks/predictions.py)
# --------------------------------------------------------------------------------------------------


class InferenceLogStatus(BaseModel):
    """Counters of the inference log writer of the worker that answered."""

    enabled: bool
    queued_rows: int = 0
    written_rows: int = 0
    written_parts: int = 0
    dropped_rows: int = 0  # predictions not logged because the queue was full
    dropped_requests: int = 0
    failed_uploads: int = 0
    spilled_parts: int = 0  # parts kept on local disk while the store was unavailable
    reuploaded_parts: int = 0
    recovered_rows: int = 0  # predictions a dead worker answered, replayed from its journal by this one
    last_error: str | None = None


class ServedTask(BaseModel):
    """What the served model predicts. (A model of its own in the OpenAPI document: BentoML documents a
    top-level optional field of an answer as not nullable, a nested one as it is.)"""

    task: str
    classes: list[str] | None = None  # classification: the classes, in the order probabilities are served
    positive_label: str | None = None  # binary: the class whose probability is served
    threshold: float | None = None  # binary: the decision threshold of the label


class ServiceMetadata(BaseModel):
    """``/metadata``: what is served, where it came from, and what a request must look like."""

    model: str
    model_version: int
    model_sha256: str
    bento_model_tag: str
    predicts: ServedTask
    features: list[str]
    dataset: str
    dataset_schema_hash: str
    lineage: LineageSummary
    limits: dict[str, int]
    batching: dict[str, float]  # adaptive batching of the answering worker: calls, requests, rows per call
    inference_log: InferenceLogStatus
    request_schema: dict[str, Any]
    batch_request_schema: dict[str, Any]


# --------------------------------------------------------------------------------------------------
# the schema of one served model, and conversion of validated requests to model input
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestSchema:
    """The generated models for one served model, and fast conversion of validated requests to columns."""

    spec: DatasetSpec
    features: list[FeatureSpec]
    record: type[BaseModel]
    columns: type[BaseModel]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def records_to_columns(self, records: list[BaseModel]) -> dict[str, np.ndarray]:
        """Validated records -> one numpy array per feature (numeric float64 with NaN, categorical object)."""
        out: dict[str, np.ndarray] = {}
        for f in self.features:
            values = [getattr(r, f.name) for r in records]
            out[f.name] = _array(values, f)
        return out

    def batch_to_columns(self, batch: BaseModel) -> dict[str, np.ndarray]:
        return {f.name: _array(getattr(batch, f.name), f) for f in self.features}

    def record_ids(self, records: list[BaseModel]) -> list[str | None]:
        return [getattr(r, self.spec.id_column) for r in records]

    def batch_ids(self, batch: BaseModel) -> list[str | None] | None:
        return getattr(batch, self.spec.id_column)


def _array(values: list[Any], f: FeatureSpec) -> np.ndarray:
    if f.kind == "numeric":
        # None -> NaN: the pipeline's imputer treats NaN as missing, exactly as in training
        return np.array([np.nan if v is None else v for v in values] if f.nullable else values, dtype=np.float64)
    return np.array(values, dtype=object)


def build_schema(spec: DatasetSpec, features: list[str], *, max_batch_rows: int) -> RequestSchema:
    """The request models for a model reading ``features`` (names of ``spec``'s features)."""
    specs = [spec.feature(n) for n in features]
    return RequestSchema(spec=spec, features=specs, record=record_model(spec, specs),
                         columns=columns_model(spec, specs, max_batch_rows))


def error_message(errors: list[dict[str, Any]], limit: int = 10) -> str:
    """``records.0.age: Input should be less than or equal to 100; ...`` (at most ``limit`` clauses)."""
    clauses = []
    for err in errors[:limit]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "invalid")
        clauses.append(f"{loc}: {msg}" if loc else msg)
    more = len(errors) - limit
    return "; ".join(clauses) + (f"; and {more} more error(s)" if more > 0 else "")
