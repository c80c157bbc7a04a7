"""The expectation suite, generated from the dataset declaration and held as plain data with its hash.

Why the suite is generated: ``DatasetSpec`` is the one place a column is named (see ``tasks.settings``).
A hand-written suite would drift from it; generating the suite means adding a feature to ``mlcycle.yaml``
adds its checks, and :func:`suite_hash` lets partitions and models record which checks a batch passed.

Choices worth knowing (each shows up in the suite, so it is visible in Data Docs and in the hash):

- The column set must match ``spec.columns`` exactly, in any order: a missing column and an unexpected
  one both fail, by name. The per-column expectations on a missing column then fail too; they are
  reported as "not evaluated" and listed after the column-set failure.
- Types are checked on the dtype, through ``expect_column_dtype_to_be_of_kind`` (``expectations.py``),
  because GX's own ``expect_column_values_to_be_in_type_list`` matches no name for pandas 3's default
  string dtype ``str`` (``StringDtype(na_value=nan)``), and would have to list every numpy/pandas width.
  Kinds: ``float`` and ``int`` features accept any float or integer dtype (numpy, nullable ``Float64``
  / ``Int64``, pyarrow), booleans excluded; ``int`` features also get
  ``expect_column_values_to_be_whole_numbers``, so ``float64`` holding whole numbers passes (what a
  nullable integer column becomes in numpy-backed pandas) while ``20.5`` fails with the offending
  values. Categorical features accept string dtypes (``str``, ``string``, ``object``, and
  ``category`` over strings); their content is then pinned down by the in-set check. The timestamp
  column must have a datetime64 dtype, with or without a time zone.
- The target per task (``dataset.task``): a binary or multiclass target is non-null and its values are in
  ``dataset.class_labels``, compared as canonical texts (``expect_column_category_keys_to_be_in_set``,
  ``expectations.py``: ``1``, ``1.0`` and ``"1"`` are the class ``"1"``, whether the column holds numbers,
  as the simulator's does, or texts, as landing batches do); a regression target is numeric, non-null and
  within ``target_min``/``target_max`` when declared. The id column is non-null and unique.
- Categorical features hold canonical texts by the time they are validated (tasks/landing.py turns
  ``1``/``1.0`` into ``"1"`` when the batch is built), so GX's in-set check compares them with the declared
  categories, which the declaration keeps as canonical texts.

The plan and its hash need no Great Expectations; :func:`build_expectations` imports it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from mlcycle.tasks.settings import DatasetSpec
from mlcycle.tasks.settings.problem import is_classification

# Custom expectation types (defined in expectations.py; GX names each after its class, in snake case).
DTYPE_KIND = "expect_column_dtype_to_be_of_kind"
WHOLE_NUMBERS = "expect_column_values_to_be_whole_numbers"
CATEGORY_IN_SET = "expect_column_category_keys_to_be_in_set"
# Core GX expectation types.
COLUMNS_MATCH = "expect_table_columns_to_match_set"
COLUMN_COUNT = "expect_table_column_count_to_equal"
ROW_COUNT = "expect_table_row_count_to_be_between"
NOT_NULL = "expect_column_values_to_not_be_null"
UNIQUE = "expect_column_values_to_be_unique"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"

NUMERIC_KINDS = ["float", "integer"]


def suite_plan(spec: DatasetSpec) -> list[tuple[str, dict[str, Any]]]:
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
    return plan + target_plan(spec)


def target_plan(spec: DatasetSpec) -> list[tuple[str, dict[str, Any]]]:
    """The target's checks for the dataset's task: classes for classification, a number for regression."""
    target = spec.target
    if is_classification(spec.task):
        return [(NOT_NULL, {"column": target}),
                (CATEGORY_IN_SET, {"column": target, "value_set": list(spec.class_labels or [])})]
    plan = [(DTYPE_KIND, {"column": target, "kinds": list(NUMERIC_KINDS)}), (NOT_NULL, {"column": target})]
    if spec.target_min is not None or spec.target_max is not None:
        plan.append((BETWEEN, {"column": target, "min_value": spec.target_min, "max_value": spec.target_max}))
    return plan


def suite_hash(spec: DatasetSpec) -> str:
    """sha256 of the generated suite (types and kwargs, in order): stable across runs and processes.

    It changes exactly when the checks change, e.g. a new feature or a new range, and not when a
    description or a drift setting does (unlike ``DatasetSpec.schema_hash``).
    """
    payload = [{"type": kind, "kwargs": kwargs} for kind, kwargs in suite_plan(spec)]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def build_expectations(spec: DatasetSpec) -> list:
    """The GX expectation objects of the suite, derived only from ``spec``.

    Mostly ``gx.expectations.*`` core classes; the dtype, whole-number and class checks are the custom
    classes of ``expectations.py`` (see this module's docstring for why).
    """
    from mlcycle.tasks.validation.expectations import expectation_class

    return [expectation_class(kind)(**copy.deepcopy(kwargs)) for kind, kwargs in suite_plan(spec)]
