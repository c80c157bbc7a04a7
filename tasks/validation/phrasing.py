"""What an expectation expected and what it observed, in words: GX results turned into plain verdicts.

Each GX result becomes an ``ExpectationOutcome`` (``tasks/records/data.py``) whose ``details`` reads like
"values in [18, 100]; 3 of 300 rows (1%) outside, e.g. [150, 220]": the expectation, what the batch
held, and a few offending values. An expectation on a missing column says "not evaluated, column
missing"; one that raised inside GX says so, with the exception's first line.
"""

from __future__ import annotations

import math
from typing import Any

from mlcycle.tasks.records.data import ExpectationOutcome
from mlcycle.tasks.validation.suite import (
    BETWEEN,
    CATEGORY_IN_SET,
    COLUMN_COUNT,
    COLUMNS_MATCH,
    DTYPE_KIND,
    IN_SET,
    NOT_NULL,
    ROW_COUNT,
    UNIQUE,
    WHOLE_NUMBERS,
)

SAMPLE_SIZE = 5  # offending values kept per expectation: enough to recognise the problem


def expectation_outcome(result: Any, present_columns: set[str]) -> ExpectationOutcome:
    """One GX expectation result as a plain verdict; ``present_columns`` are the columns the batch had."""
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
    if kind == CATEGORY_IN_SET:
        return f"values in {{{', '.join(str(v) for v in kwargs['value_set'])}}} (compared as text)"
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
    CATEGORY_IN_SET: "not in the set",
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
        safe = json_safe(value)
        if safe not in out:
            out.append(safe)
        if len(out) >= SAMPLE_SIZE:
            break
    return out


def json_safe(value: Any) -> Any:
    """Recursively convert to what ``json.dumps(..., allow_nan=False)`` accepts (NaN becomes None)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return json_safe(value.item())
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
