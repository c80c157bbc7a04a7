"""Profiling the columns of a user's table: what each holds, and the rules ``mlcycle init`` declares it by.

:func:`profile_column` says what one column holds (type, nulls, distinct values, range, canonical category
texts); the rules turn a profile into a feature (:func:`feature_declaration`) or a target
(:func:`task_of`, :func:`target_declaration`), each with the reason printed beside the decision
(tasks/project.py drafts the whole project from them). The rules:

* kind: booleans and texts are categorical (texts with more than 50 distinct values are left out, as free
  text); numbers are categorical when they are whole numbers with at most 10 distinct values (codes such as
  an occupation 1..6, or a 0/1 flag), else numeric;
* dtype: ``int`` when every value is a whole number, else ``float``;
* range: the observed min/max widened by 10% of the observed span on each side (never below 0 for a
  column without negative values), then rounded outward to a round step (a tenth of the span's power of
  ten): tomorrow's batch may reach a little beyond what this one file holds;
* categories: the observed values as canonical texts (tasks/settings/problem.py), which the config file
  writes as YAML numbers or booleans where they are ones;
* nullable: when the file has a null in the column (a column without one refuses nulls later);
* task of a target: two values -> binary, its positive label the larger value for numbers and booleans,
  the rarer class for texts; whole numbers with 3..20 values, or texts with 3 or more -> multiclass; other
  numbers -> regression, its target_min/target_max by the range rule.

The rules do not judge the columns: one that leaks the target is declared like any other (the gate's
leakage guard is where that is found).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlcycle.tasks.records.data import InitDecision
from mlcycle.tasks.settings.problem import category_keys_of

MAX_TEXT_CATEGORIES = 50  # a text column with more distinct values is free text, not a category
MAX_CODED_CATEGORIES = 10  # whole numbers with at most this many distinct values are category codes
MAX_CLASSES = 20  # a whole-number target with 3..MAX_CLASSES values is multiclass, with more regression
RANGE_MARGIN = 0.10  # share of the observed span added on each side of a numeric range


class ProfileError(ValueError):
    """The file cannot be turned into a declaration as asked; the message names the way out."""


@dataclass
class ColumnProfile:
    """What one column of the file holds, as far as the declaration cares."""

    name: str
    dtype: str  # the pandas dtype it was read as
    rows: int
    nulls: int
    distinct: int
    boolean: bool
    numeric: bool
    whole: bool  # numeric, and every value a whole number
    datetime: bool  # a datetime dtype, or ISO 8601 texts
    low: float | None  # numeric: observed minimum and maximum
    high: float | None
    counts: dict[str, int] | None  # canonical text -> rows, when there are few enough distinct values

    @property
    def unique(self) -> bool:
        return self.nulls == 0 and self.distinct == self.rows

    @property
    def text(self) -> bool:
        return not (self.boolean or self.numeric or self.datetime)


def profile_column(name: str, values: pd.Series) -> ColumnProfile:
    present = values.dropna()
    boolean = pd.api.types.is_bool_dtype(values.dtype)
    numeric = not boolean and pd.api.types.is_numeric_dtype(values.dtype)
    whole = numeric and bool((present % 1 == 0).all())
    datetime = pd.api.types.is_datetime64_any_dtype(values.dtype) or (
        not numeric and not boolean and len(present) > 0 and _iso_dates(present))
    distinct = int(present.nunique())
    counts = None
    if distinct <= max(MAX_TEXT_CATEGORIES, MAX_CLASSES) and not datetime:
        counts = {str(k): int(v) for k, v in category_keys_of(present).value_counts().items()}
    return ColumnProfile(
        name=str(name), dtype=str(values.dtype), rows=len(values), nulls=int(values.isna().sum()), distinct=distinct,
        boolean=boolean, numeric=numeric, whole=whole, datetime=bool(datetime),
        low=float(present.min()) if numeric and len(present) else None,
        high=float(present.max()) if numeric and len(present) else None, counts=counts)


def _iso_dates(values: pd.Series) -> bool:
    texts = values.astype(str)
    if not texts.str.match(r"^\d{4}-\d{2}-\d{2}").all():
        return False
    return bool(pd.to_datetime(texts, errors="coerce", utc=True, format="ISO8601").notna().all())


# --------------------------------------------------------------------------------------------------
# the decisions
# --------------------------------------------------------------------------------------------------


def outward_range(low: float, high: float, whole: bool) -> tuple[float, float]:
    """The declared range for an observed one: widened by RANGE_MARGIN of the span, rounded outward."""
    span = high - low
    scale = span or abs(high) or 1.0
    margin = RANGE_MARGIN * scale
    lo, hi = low - margin, high + margin
    if low >= 0:
        lo = max(lo, 0.0)
    step = 10.0 ** (math.floor(math.log10(scale)) - 1)
    if whole:
        step = max(step, 1.0)
    digits = max(0, -math.floor(math.log10(step)))
    return round(math.floor(lo / step) * step, digits), round(math.ceil(hi / step) * step, digits)


def sorted_keys(keys) -> list[str]:
    """Canonical texts in a reading order: numbers by value, then booleans and texts alphabetically."""
    def order(key: str):
        try:
            return (0, float(key), key)
        except ValueError:
            return (1, 0.0, key)
    return sorted(keys, key=order)


def feature_declaration(p: ColumnProfile) -> tuple[dict[str, Any] | None, str, str]:
    """The feature ``p`` becomes (None: left out), the choice in a few words, and why."""
    nullable = p.nulls > 0
    nulls = f"{p.nulls} nulls" if nullable else "no nulls"
    if p.datetime:
        return None, "left out", "a datetime column that is not the timestamp"
    if p.boolean or (p.numeric and p.whole and p.distinct <= MAX_CODED_CATEGORIES) or (
            p.text and p.distinct <= MAX_TEXT_CATEGORIES):
        categories = sorted_keys(p.counts or {})
        if p.boolean:
            why = "booleans"
        elif p.numeric:
            why = f"{p.distinct} distinct whole numbers (at most {MAX_CODED_CATEGORIES}: codes)"
        else:
            why = f"text with {p.distinct} distinct values (at most {MAX_TEXT_CATEGORIES})"
        feature = {"name": p.name, "kind": "categorical", "categories": categories, "nullable": nullable}
        return feature, f"categorical [{', '.join(categories)}]", f"{why}; {nulls}"
    if p.text:
        return None, "left out", (f"text with {p.distinct} distinct values (more than {MAX_TEXT_CATEGORIES}: free "
                                  "text, not a category); ingest drops it as an extra column")
    if p.low is None:
        return None, "left out", "no values"
    dtype = "int" if p.whole else "float"
    low, high = outward_range(p.low, p.high, p.whole)
    kind_why = (f"{p.distinct} distinct numbers" if not p.whole
                else f"{p.distinct} distinct whole numbers (more than {MAX_CODED_CATEGORIES})")
    feature = {"name": p.name, "kind": "numeric", "dtype": dtype, "min": low, "max": high, "nullable": nullable}
    return feature, f"numeric {dtype} {number_text(low)}..{number_text(high)}", (
        f"{kind_why}, observed {number_text(p.low)}..{number_text(p.high)} (widened {RANGE_MARGIN:.0%} of the span "
        f"each side, rounded outward); {nulls}")


def task_of(p: ColumnProfile) -> tuple[str | None, str]:
    """The task a target column gives (None: it cannot be a target), and why."""
    if p.datetime:
        return None, "a datetime column"
    if p.distinct < 2:
        return None, f"{p.distinct} distinct value"
    if p.distinct == 2:
        return "binary", "two values"
    if p.numeric and not (p.whole and p.distinct <= MAX_CLASSES):
        return "regression", (f"{p.distinct} distinct numbers" if not p.whole else
                              f"{p.distinct} distinct whole numbers (more than {MAX_CLASSES})")
    if p.numeric:
        return "multiclass", f"{p.distinct} distinct whole numbers (3..{MAX_CLASSES})"
    return "multiclass", f"text with {p.distinct} distinct values"


def target_declaration(p: ColumnProfile, task: str | None) -> tuple[dict[str, Any], list[InitDecision]]:
    """The dataset keys the target sets (task, classes, positive label, range), with their decisions."""
    guessed, why = task_of(p)
    if task is None:
        if guessed is None:
            raise ProfileError(f"column {p.name!r} cannot be the target: {why}")
        task, why = guessed, f"guessed from {p.name!r}: {why}"
    else:
        why = f"--task {task}"
    decisions = [InitDecision(subject="dataset.task", choice=task, reason=why)]
    if p.nulls:
        decisions.append(InitDecision(subject="dataset.target", choice=f"{p.name} has {p.nulls} nulls",
                                      reason="validation refuses batches with rows whose target is missing"))
    if task == "regression":
        if not p.numeric:
            raise ProfileError(f"--task regression needs a numeric target; {p.name!r} holds {p.dtype} values")
        low, high = outward_range(p.low, p.high, p.whole)
        decisions.append(InitDecision(
            subject="dataset.target_min/target_max", choice=f"{number_text(low)}..{number_text(high)}",
            reason=f"observed {number_text(p.low)}..{number_text(p.high)}, widened by {RANGE_MARGIN:.0%} of the span "
                   "each side, rounded outward"))
        return {"task": task, "target_min": low, "target_max": high}, decisions
    if p.counts is None:
        raise ProfileError(f"{p.name!r} has {p.distinct} distinct values, too many classes for a {task} target")
    classes = sorted_keys(p.counts)
    if task == "binary":
        if len(classes) != 2:
            raise ProfileError(f"--task binary needs a target with two values; {p.name!r} has {len(classes)}")
        if p.numeric or p.boolean:
            positive, rule = classes[-1], "the larger value"
        else:
            positive = min(reversed(classes), key=lambda c: p.counts[c])
            rule = f"the rarer class, {p.counts[positive] / (p.rows - p.nulls):.0%} of rows"
        decisions.append(InitDecision(subject="dataset.positive_label", choice=positive,
                                      reason=f"{rule} of {', '.join(classes)}"))
        return {"task": task, "positive_label": positive, "classes": classes}, decisions
    if len(classes) < 3:
        raise ProfileError(f"--task multiclass needs a target with at least 3 values; {p.name!r} has {len(classes)}")
    decisions.append(InitDecision(subject="dataset.classes", choice=", ".join(classes),
                                  reason=f"the {len(classes)} values of {p.name!r} in the file"))
    return {"task": task, "classes": classes}, decisions


def number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
