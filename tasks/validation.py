"""Validate one daily batch against the expectation suite generated from the dataset declaration.

Why the suite is generated: ``DatasetSpec`` is the one place a column is named (see ``tasks.settings``).
A hand-written suite would drift from it; generating the suite means adding a feature to ``mlcycle.yaml``
adds its checks, and :func:`suite_hash` lets partitions and models record which checks a batch passed.

Contract of :func:`validate_frame`: whatever is *in* the frame (missing or extra columns, strings in a
numeric column, nulls, out-of-range values, zero rows), the answer is a :class:`ValidationReport` with
failed expectations that name the column and the problem, never an exception. An expectation that
raised inside Great Expectations is reported as failed, with the exception's message. Exceptions are
left for broken installations and programming errors.

Choices worth knowing (each shows up in the suite, so it is visible in Data Docs and in the hash):

- The column set must match ``spec.columns`` exactly, in any order: a missing column and an unexpected
  one both fail, by name. The per-column expectations on a missing column then fail too; they are
  reported as "not evaluated" and listed after the column-set failure.
- Types are checked on the dtype, through ``expect_column_dtype_to_be_of_kind`` (defined here), because
  GX's own ``expect_column_values_to_be_in_type_list`` matches no name for pandas 3's default string
  dtype ``str`` (``StringDtype(na_value=nan)``), and would have to list every numpy/pandas width.
  Kinds: ``float`` and ``int`` features accept any float or integer dtype (numpy, nullable ``Float64``
  / ``Int64``, pyarrow), booleans excluded; ``int`` features also get
  ``expect_column_values_to_be_whole_numbers``, so ``float64`` holding whole numbers passes (what a
  nullable integer column becomes in numpy-backed pandas) while ``20.5`` fails with the offending
  values. Categorical features accept string dtypes (``str``, ``string``, ``object``, and
  ``category`` over strings); their content is then pinned down by the in-set check. The timestamp
  column must have a datetime64 dtype, with or without a time zone.
- The target must be non-null and in ``{0, 1}``; the id column non-null and unique.

Each call builds its own ephemeral GX context (nothing on disk but the optional Data Docs folder, no
``gx/`` directory, analytics off; GX 1.24 ships no telemetry client and never reaches the network
here). Great Expectations is imported inside the functions: importing it costs 3-4 s, which flows that
only load this module must not pay.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from pydantic import BaseModel

from mlcycle.tasks.settings import DatasetSpec

if TYPE_CHECKING:
    import pandas as pd

DATASOURCE_NAME = "mlcycle"
DOCS_SITE_NAME = "mlcycle_batches"
SAMPLE_SIZE = 5  # offending values kept per expectation: enough to recognise the problem

# Custom expectation types (registered with GX on first use, see _custom_expectation_classes).
DTYPE_KIND = "expect_column_dtype_to_be_of_kind"
WHOLE_NUMBERS = "expect_column_values_to_be_whole_numbers"
COLUMNS_MATCH = "expect_table_columns_to_match_set"
COLUMN_COUNT = "expect_table_column_count_to_equal"
ROW_COUNT = "expect_table_row_count_to_be_between"
NOT_NULL = "expect_column_values_to_not_be_null"
UNIQUE = "expect_column_values_to_be_unique"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"

RESULT_FORMATS = ("BOOLEAN_ONLY", "BASIC", "SUMMARY", "COMPLETE")
NUMERIC_KINDS = ["float", "integer"]
TARGET_VALUES = [0, 1]


class ExpectationOutcome(BaseModel):
    """One expectation's verdict in plain terms: what was expected, what was seen, a few offenders."""

    expectation: str
    column: str | None
    success: bool
    details: str
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list = []
    exception: str | None = None


class ValidationReport(BaseModel):
    """The verdict on one batch: what the ingest flow publishes or quarantines on, and stores.

    ``result_json`` is GX's own validation result (JSON-safe), kept so the evidence can be stored next
    to the partition and re-rendered later; ``results`` and ``failed`` are the same verdicts, typed and
    phrased for logs, artifacts and alerts. ``docs_index`` is relative to ``docs_dir``, so the folder
    can be uploaded anywhere and the link still resolves.
    """

    success: bool
    suite_name: str
    suite_hash: str
    evaluated: int
    failed: list[ExpectationOutcome]
    results: list[ExpectationOutcome]
    result_json: dict
    docs_dir: Path | None = None
    docs_index: str | None = None

    def failure_summary(self) -> str:
        """One line naming every failed expectation and its column, column-set problems first."""
        if self.success:
            return f"all {self.evaluated} expectations passed"
        parts = [f"{o.column or 'table'}: {o.expectation} ({o.details})" for o in self.failed]
        return f"{len(self.failed)} of {self.evaluated} expectations failed: " + "; ".join(parts)


# --------------------------------------------------------------------------------------------------
# The suite, derived from the declaration
# --------------------------------------------------------------------------------------------------


def _suite_plan(spec: DatasetSpec) -> list[tuple[str, dict[str, Any]]]:
    """The suite as plain data, ``(expectation type, kwargs)`` in reading order.

    Both :func:`build_expectations` and :func:`suite_hash` read this one list, so the hash is exactly
    the hash of the configurations handed to GX, and computing it needs no GX import.
    """
    plan: list[tuple[str, dict[str, Any]]] = [
        (COLUMNS_MATCH, {"column_set": list(spec.columns), "exact_match": True}),
        (COLUMN_COUNT, {"value": len(spec.columns)}),  # the set check alone misses a duplicated name
        (ROW_COUNT, {"min_value": spec.min_rows_per_batch, "max_value": spec.max_rows_per_batch}),
        (NOT_NULL, {"column": spec.id_column}),
        (UNIQUE, {"column": spec.id_column}),
        (DTYPE_KIND, {"column": spec.timestamp_column, "kinds": ["datetime"]}),
        (NOT_NULL, {"column": spec.timestamp_column}),
    ]
    for feature in spec.features:
        col = feature.name
        if feature.kind == "categorical":
            plan.append((DTYPE_KIND, {"column": col, "kinds": ["string"]}))
        else:
            plan.append((DTYPE_KIND, {"column": col, "kinds": list(NUMERIC_KINDS)}))
            if feature.dtype == "int":
                plan.append((WHOLE_NUMBERS, {"column": col}))
        if not feature.nullable:
            plan.append((NOT_NULL, {"column": col}))
        if feature.min is not None or feature.max is not None:
            plan.append((BETWEEN, {"column": col, "min_value": feature.min, "max_value": feature.max}))
        if feature.categories:
            plan.append((IN_SET, {"column": col, "value_set": list(feature.categories)}))
    plan += [
        (NOT_NULL, {"column": spec.target}),
        (IN_SET, {"column": spec.target, "value_set": list(TARGET_VALUES)}),
    ]
    return plan


def suite_hash(spec: DatasetSpec) -> str:
    """sha256 of the generated suite (types and kwargs, in order): stable across runs and processes.

    It changes exactly when the checks change, e.g. a new feature or a new range, and not when a
    description or a drift setting does (unlike ``DatasetSpec.schema_hash``).
    """
    payload = [{"type": kind, "kwargs": kwargs} for kind, kwargs in _suite_plan(spec)]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def build_expectations(spec: DatasetSpec) -> list:
    """The GX expectation objects of the suite, derived only from ``spec``.

    Mostly ``gx.expectations.*`` core classes; the dtype and whole-number checks are the two custom
    classes of this module (see the module docstring for why).
    """
    from great_expectations.expectations.registry import get_expectation_impl

    _custom_expectation_classes()
    return [get_expectation_impl(kind)(**copy.deepcopy(kwargs)) for kind, kwargs in _suite_plan(spec)]


_GX_GLOBALS_LOCK = threading.Lock()  # guards what GX keeps process-wide: its registries, its current context
_CUSTOM_CLASSES: dict[str, type] = {}


def _custom_expectation_classes() -> dict[str, type]:
    """Define (once per process) the two expectations GX lacks for pandas 3 frames.

    Defining a GX expectation or metric class registers it globally by name, so the classes are
    created lazily here rather than at import (which would import GX) and exactly once.
    """
    with _GX_GLOBALS_LOCK:
        if _CUSTOM_CLASSES:
            return _CUSTOM_CLASSES

        from typing import ClassVar

        import pandas as pd
        from great_expectations.execution_engine import PandasExecutionEngine
        from great_expectations.expectations.expectation import BatchExpectation, ColumnMapExpectation
        from great_expectations.expectations.metrics.map_metric_provider import (
            ColumnMapMetricProvider,
            column_condition_partial,
        )
        from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent
        from great_expectations.render.renderer.renderer import renderer

        def sentence(configuration: Any, runtime: dict | None, text: str, **params: str) -> list:
            # Data Docs would otherwise print the raw kwargs of a custom expectation.
            runtime = runtime or {}
            include_column = runtime.get("include_column_name") is not False
            return [
                RenderedStringTemplateContent(
                    content_block_type="string_template",
                    string_template={
                        "template": ("$column " if include_column else "") + text,
                        "params": {"column": configuration.kwargs.get("column"), **params},
                        "styling": runtime.get("styling"),
                    },
                )
            ]

        class ColumnValuesWholeNumber(ColumnMapMetricProvider):
            condition_metric_name = "column_values.mlcycle_whole_number"

            @column_condition_partial(engine=PandasExecutionEngine)
            def _pandas(cls, column, **kwargs):
                if pd.api.types.is_integer_dtype(column.dtype):
                    return pd.Series(True, index=column.index)
                return column % 1 == 0

        class ExpectColumnValuesToBeWholeNumbers(ColumnMapExpectation):
            """Values of an integer feature are whole numbers, whatever the dtype carrying them."""

            map_metric: ClassVar[str] = "column_values.mlcycle_whole_number"

            @classmethod
            @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
            def _prescriptive_renderer(cls, configuration=None, runtime_configuration=None, **kw):
                return sentence(configuration, runtime_configuration, "values must be whole numbers.")

        class ExpectColumnDtypeToBeOfKind(BatchExpectation):
            """The column's dtype is one of the named kinds: float, integer, string, datetime."""

            column: str
            kinds: list[str]
            metric_dependencies = ("table.column_types",)
            domain_keys = ("batch_id",)
            success_keys = ("column", "kinds")
            args_keys = ("column", "kinds")

            @classmethod
            @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
            def _prescriptive_renderer(cls, configuration=None, runtime_configuration=None, **kw):
                kinds = " or ".join(configuration.kwargs.get("kinds") or [])
                template = "must have a dtype of kind $kinds."
                return sentence(configuration, runtime_configuration, template, kinds=kinds)

            def _validate(
                self,
                metrics: dict,
                runtime_configuration: dict | None = None,
                execution_engine: Any = None,
            ) -> dict:
                types = {entry["name"]: entry["type"] for entry in metrics["table.column_types"]}
                if self.column not in types:
                    return {"success": False, "result": {"observed_value": None}}
                dtype = types[self.column]
                return {
                    "success": dtype_kind(dtype) in self.kinds,
                    "result": {"observed_value": str(dtype)},
                }

        del ColumnValuesWholeNumber  # registered by its definition; nothing refers to it by name
        _CUSTOM_CLASSES.update(
            {DTYPE_KIND: ExpectColumnDtypeToBeOfKind, WHOLE_NUMBERS: ExpectColumnValuesToBeWholeNumbers}
        )
        return _CUSTOM_CLASSES


def dtype_kind(dtype: Any) -> str | None:
    """The kind a pandas dtype counts as in this suite: float, integer, string, datetime, or None.

    ``object`` counts as string (pandas < 3 and mixed columns): for categorical features the in-set
    check then judges the values themselves. Booleans are none of the numeric kinds.
    """
    import pandas as pd
    from pandas.api import types as pdt

    if pdt.is_bool_dtype(dtype):
        return None
    if pdt.is_integer_dtype(dtype):
        return "integer"
    if pdt.is_float_dtype(dtype):
        return "float"
    if pdt.is_datetime64_any_dtype(dtype):
        return "datetime"
    if isinstance(dtype, pd.CategoricalDtype):
        return "string" if pdt.is_string_dtype(dtype.categories.dtype) else None
    if pdt.is_string_dtype(dtype):
        return "string"
    return None


# --------------------------------------------------------------------------------------------------
# Running the suite through a Checkpoint
# --------------------------------------------------------------------------------------------------


def validate_frame(
    df: pd.DataFrame,
    spec: DatasetSpec,
    *,
    result_format: str = "SUMMARY",
    docs_dir: Path | None = None,
    batch_name: str = "batch",
) -> ValidationReport:
    """Validate one batch through a GX Checkpoint; build Data Docs into ``docs_dir`` if given.

    ``result_format`` is GX's: ``SUMMARY`` (pipelines: counts and up to 20 offending values),
    ``COMPLETE`` lists every offending row and is ~40x slower on a failing 1M-row batch. ``batch_name``
    (e.g. the partition date) is the run name shown in Data Docs and in the page's path. A
    ``docs_dir`` should hold one batch's site: its index.html lists only this run, because the
    context (and its store of results) lives only for this call.
    """
    if result_format not in RESULT_FORMATS:
        raise ValueError(f"result_format must be one of {RESULT_FORMATS}, got {result_format!r}")
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    expectations = build_expectations(spec)
    context = _ephemeral_context(docs_dir)
    asset = context.data_sources.add_pandas(DATASOURCE_NAME).add_dataframe_asset(spec.name)
    batch_definition = asset.add_batch_definition_whole_dataframe(batch_name)
    suite = context.suites.add(gx.ExpectationSuite(name=spec.name, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{spec.name}_batch", data=batch_definition, suite=suite)
    )
    actions = []
    if docs_dir is not None:
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE_NAME]))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{spec.name}_checkpoint",
            validation_definitions=[definition],
            actions=actions,
            # The index "query" is a string listing every offending row index; nobody reads it here.
            result_format={"result_format": result_format, "return_unexpected_index_query": False},
        )
    )
    run_id = RunIdentifier(run_name=batch_name, run_time=dt.datetime.now(dt.UTC))
    try:
        checkpoint_result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=run_id)
    finally:
        _release(context)
    ((result_key, validation_result),) = checkpoint_result.run_results.items()

    order = {e.id: i for i, e in enumerate(suite.expectations)}
    gx_results = sorted(validation_result.results, key=lambda r: order.get(r.expectation_config.id, 0))
    present = {str(c) for c in df.columns}
    outcomes = [_outcome(r, present) for r in gx_results]
    failed = [o for o in outcomes if not o.success]

    docs_index = None
    if docs_dir is not None:
        docs_index = _docs_page(context, result_key, docs_dir)
    return ValidationReport(
        success=bool(validation_result.success),
        suite_name=spec.name,
        suite_hash=suite_hash(spec),
        evaluated=len(outcomes),
        failed=failed,
        results=outcomes,
        result_json=_json_safe(validation_result.to_json_dict()),
        docs_dir=None if docs_dir is None else Path(docs_dir).resolve(),
        docs_index=docs_index,
    )


def _ephemeral_context(docs_dir: Path | None) -> Any:
    """An in-memory context; its only filesystem site (if any) writes to ``docs_dir``."""
    import great_expectations as gx

    sites = {}
    if docs_dir is not None:
        docs_dir = Path(docs_dir).resolve()
        docs_dir.mkdir(parents=True, exist_ok=True)
        sites[DOCS_SITE_NAME] = {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_how_to_buttons": False},
        }
    return gx.get_context(mode="ephemeral", project_config=_context_config(sites))


def _context_config(sites: dict) -> Any:
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    return DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )


_IDLE_CONTEXT: list = []


def _release(context: Any) -> None:
    """Stop GX's process-global "current context" from pinning this batch's frame in memory.

    ``get_context`` makes the new context current, and it holds the batch until another context
    replaces it: in a long-lived worker that is one whole frame per process. Swap in an empty
    context rather than None, because a run still going in another thread asks the current context
    whether it is a cloud one.
    """
    import great_expectations as gx
    from great_expectations.data_context import set_context
    from great_expectations.data_context.data_context.context_factory import project_manager

    with _GX_GLOBALS_LOCK:
        if not _IDLE_CONTEXT:
            _IDLE_CONTEXT.append(gx.get_context(mode="ephemeral", project_config=_context_config({})))
        try:
            current = project_manager.get_current_project()
        except Exception:  # no current context at all: nothing is pinned
            return
        if current is context:
            set_context(_IDLE_CONTEXT[0])


def _docs_page(context: Any, result_key: Any, docs_dir: Path) -> str:
    """The validation page's path relative to ``docs_dir`` (falls back to index.html)."""
    root = Path(docs_dir).resolve()
    for site in context.get_docs_sites_urls(resource_identifier=result_key, site_name=DOCS_SITE_NAME):
        url = site.get("site_url")
        if url:
            page = Path(unquote(urlparse(url).path))
            if page.is_file() and page.is_relative_to(root):
                return page.relative_to(root).as_posix()
    return "index.html"


# --------------------------------------------------------------------------------------------------
# Turning GX results into plain verdicts
# --------------------------------------------------------------------------------------------------


def _outcome(result: Any, present_columns: set[str]) -> ExpectationOutcome:
    config = result.expectation_config
    kind = config.type
    kwargs = dict(config.kwargs)
    column = kwargs.get("column")
    body = result.result or {}
    exception = _exception_message(result)
    unexpected_count = body.get("unexpected_count")
    unexpected_percent = body.get("unexpected_percent")
    sample = _sample(body.get("partial_unexpected_list") or [])

    if column is not None and column not in present_columns and not result.success:
        details = "not evaluated, column missing"
    elif exception is not None:
        details = f"{_expected(kind, kwargs)}; could not be evaluated: {exception}"
    else:
        details = f"{_expected(kind, kwargs)}; {_observed(kind, kwargs, body, bool(result.success))}"
    return ExpectationOutcome(
        expectation=kind,
        column=column,
        success=bool(result.success),
        details=details,
        unexpected_count=None if unexpected_count is None else int(unexpected_count),
        unexpected_percent=None if unexpected_percent is None else float(unexpected_percent),
        sample=sample,
        exception=exception,
    )


def _exception_message(result: Any) -> str | None:
    """GX puts a raised exception either flat or keyed by metric id; return its first message line."""
    info = result.exception_info or {}
    candidates = [info] if "raised_exception" in info else list(info.values())
    for entry in candidates:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            message = str(entry.get("exception_message") or "exception without a message").strip()
            return message.splitlines()[0][:300] if message else "exception without a message"
    return None


def _expected(kind: str, kwargs: dict) -> str:
    if kind == COLUMNS_MATCH:
        return f"exactly the {len(kwargs['column_set'])} declared columns"
    if kind == COLUMN_COUNT:
        return f"{kwargs['value']} columns"
    if kind == ROW_COUNT:
        return f"row count in [{_num(kwargs['min_value'])}, {_num(kwargs['max_value'])}]"
    if kind == NOT_NULL:
        return "no nulls"
    if kind == UNIQUE:
        return "unique values"
    if kind == BETWEEN:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if low is None:
            return f"values <= {_num(high)}"
        if high is None:
            return f"values >= {_num(low)}"
        return f"values in [{_num(low)}, {_num(high)}]"
    if kind == IN_SET:
        return f"values in {{{', '.join(str(v) for v in kwargs['value_set'])}}}"
    if kind == DTYPE_KIND:
        return f"dtype of kind {' or '.join(kwargs['kinds'])}"
    if kind == WHOLE_NUMBERS:
        return "whole numbers"
    return kind


_PROBLEM = {
    NOT_NULL: "null",
    UNIQUE: "duplicated",
    BETWEEN: "outside",
    IN_SET: "not in the set",
    WHOLE_NUMBERS: "not whole",
}


def _observed(kind: str, kwargs: dict, body: dict, success: bool) -> str:
    if kind == COLUMNS_MATCH:
        mismatch = (body.get("details") or {}).get("mismatched") or {}
        parts = []
        if mismatch.get("missing"):
            parts.append(f"missing {sorted(map(str, mismatch['missing']))}")
        if mismatch.get("unexpected"):
            parts.append(f"unexpected {sorted(map(str, mismatch['unexpected']))}")
        return ", ".join(parts) or ("as declared" if success else "columns differ")
    if kind in (ROW_COUNT, COLUMN_COUNT, DTYPE_KIND):
        return f"observed {body.get('observed_value')}"
    if kind in _PROBLEM:
        count = body.get("unexpected_count")
        if count is None:
            return "passed" if success else "failed"
        total = body.get("element_count")
        if total is not None and kind != NOT_NULL:
            total -= body.get("missing_count") or 0  # nulls are not judged by this expectation
        percent = body.get("unexpected_percent")
        text = f"{count} of {total} rows" if total is not None else f"{count} rows"
        if percent is not None and count:
            text += f" ({_pct(percent)}%)"
        text += f" {_PROBLEM[kind]}"
        sample = _sample(body.get("partial_unexpected_list") or [])
        if sample and kind != NOT_NULL:
            text += f", e.g. {sample}"
        return text
    return "passed" if success else "failed"


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _pct(value: float) -> str:
    return f"{value:.3g}"


def _sample(values: list) -> list:
    """The first few distinct offending values, JSON-safe."""
    out: list = []
    for value in values:
        safe = _json_safe(value)
        if safe not in out:
            out.append(safe)
        if len(out) >= SAMPLE_SIZE:
            break
    return out


def _json_safe(value: Any) -> Any:
    """Recursively convert to what ``json.dumps(..., allow_nan=False)`` accepts (NaN becomes None)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return _json_safe(value.item())
        except (ValueError, TypeError):
            pass
    if hasattr(value, "isoformat"):
        try:
            return value.isoformat()
        except ValueError:  # NaT
            return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)
