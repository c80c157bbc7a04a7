"""The expectations Great Expectations lacks for mlcycle's batches, and the lookup of every suite type.

* ``expect_column_dtype_to_be_of_kind``: the column's dtype is one of the named kinds (float, integer,
  string, datetime), judged by :func:`dtype_kind`. GX's ``expect_column_values_to_be_in_type_list``
  matches no name for pandas 3's default string dtype ``str`` and would have to list every width.
* ``expect_column_values_to_be_whole_numbers``: an integer feature's values are whole numbers, whatever
  the dtype carrying them (``float64`` is what a nullable integer column becomes in numpy-backed pandas).

Defining a GX expectation or metric class registers it in GX's process-wide registry under its snake-case
name, so the classes are defined here at module level: importing this module registers them, once per
process. This module imports GX at its top, which costs 3-4 s: only the validation package imports it,
and only inside the functions that validate a batch (``suite.build_expectations``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation, ColumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    column_condition_partial,
)
from great_expectations.expectations.registry import get_expectation_impl
from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent
from great_expectations.render.renderer.renderer import renderer
from pandas.api import types as pdt

from mlcycle.tasks.settings.problem import category_keys_of


def expectation_class(kind: str) -> type:
    """The GX expectation class registered for an expectation type (core, or one of this module's)."""
    return get_expectation_impl(kind)


def dtype_kind(dtype: Any) -> str | None:
    """The kind a pandas dtype counts as in this suite: float, integer, string, datetime, or None.

    ``object`` counts as string (pandas < 3 and mixed columns): for categorical features the in-set
    check then judges the values themselves. Booleans are none of the numeric kinds.
    """
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


def _sentence(configuration: Any, runtime: dict | None, text: str, **params: str) -> list:
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
    """The metric behind the whole-number check (registered by its definition, referred to by its name)."""

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
        return _sentence(configuration, runtime_configuration, "values must be whole numbers.")


class ColumnValuesCategoryKeyInSet(ColumnMapMetricProvider):
    """The metric behind the class check: a value's canonical text is one of ``value_set``."""

    condition_metric_name = "column_values.mlcycle_category_key_in_set"
    condition_value_keys = ("value_set",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, value_set, **kwargs):
        return category_keys_of(column).isin(list(value_set))


class ExpectColumnCategoryKeysToBeInSet(ColumnMapExpectation):
    """Values, compared as canonical category texts, are in ``value_set`` (``1``, ``1.0``, ``"1"`` are ``"1"``)."""

    value_set: list[str]
    map_metric: ClassVar[str] = "column_values.mlcycle_category_key_in_set"
    success_keys = ("value_set", "mostly")
    args_keys = ("column", "value_set")

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(cls, configuration=None, runtime_configuration=None, **kw):
        values = ", ".join(configuration.kwargs.get("value_set") or [])
        return _sentence(configuration, runtime_configuration, "values must be one of $values (compared as text).",
                         values=values)


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
        return _sentence(configuration, runtime_configuration, template, kinds=kinds)

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
