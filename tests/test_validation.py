"""Specification of batch validation: the suite comes from the declaration, failures name the problem.

The valid frame is built here from the declared dataset (``mlcycle.yaml``), so adding a feature to the
declaration keeps these tests meaningful without editing them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.records.data import ValidationReport
from mlcycle.tasks.settings import DatasetSpec, load_settings
from mlcycle.tasks.validation.runner import validate_frame
from mlcycle.tasks.validation.suite import build_expectations, suite_hash

REPO_ROOT = Path(__file__).resolve().parents[1]
ROWS = 300


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO_ROOT)  # mlcycle.yaml is found from the repository root
        return load_settings().dataset


def valid_frame(spec: DatasetSpec, rows: int = ROWS, seed: int = 7) -> pd.DataFrame:
    """A batch that satisfies every declared check, in the dtypes a pandas 3 pipeline produces."""
    rng = np.random.default_rng(seed)
    seconds = pd.to_timedelta(rng.integers(0, 86_400, rows), unit="s")
    data: dict[str, object] = {
        spec.id_column: np.arange(rows, dtype="int64"),
        spec.timestamp_column: pd.Timestamp("2026-10-01") + seconds,
    }
    for feature in spec.features:
        if feature.kind == "categorical":
            data[feature.name] = pd.array(rng.choice(feature.categories, rows), dtype="str")
            continue
        low = feature.min if feature.min is not None else 0.0
        high = feature.max if feature.max is not None else low + 1.0
        if feature.dtype == "int":
            data[feature.name] = rng.integers(int(np.ceil(low)), int(np.floor(high)) + 1, rows)
        else:
            values = rng.uniform(low, high, rows)
            if feature.nullable:
                values[::17] = np.nan  # declared nullable: nulls must pass
            data[feature.name] = values
    data[spec.target] = rng.integers(0, 2, rows)
    return pd.DataFrame(data)


def failed_pairs(report: ValidationReport) -> set[tuple[str | None, str]]:
    return {(o.column, o.expectation) for o in report.failed}


def numeric_int_feature(spec: DatasetSpec) -> str:
    return next(f.name for f in spec.features if f.kind == "numeric" and f.dtype == "int")


def ranged_float_feature(spec: DatasetSpec, nullable: bool = False) -> str:
    return next(
        f.name
        for f in spec.features
        if f.kind == "numeric" and f.dtype == "float" and f.max is not None and f.nullable == nullable
    )


def categorical_feature(spec: DatasetSpec) -> str:
    return spec.categorical_features[0].name


# --------------------------------------------------------------------------------------------------


def test_valid_batch_passes_every_expectation(spec):
    report = validate_frame(valid_frame(spec), spec)
    assert report.success, report.failure_summary()
    assert report.failed == []
    assert report.evaluated == len(report.results) == len(build_expectations(spec))
    assert report.suite_name == spec.name
    assert report.suite_hash == suite_hash(spec)
    assert report.failure_summary() == f"all {report.evaluated} expectations passed"
    assert report.docs_dir is None and report.docs_index is None


def test_suite_is_derived_from_the_declaration(spec):
    kinds_by_column: dict[str, set[str]] = {}
    for expectation in build_expectations(spec):
        column = getattr(expectation, "column", None)
        kinds_by_column.setdefault(column, set()).add(expectation.expectation_type)
    assert set(kinds_by_column) - {None} == set(spec.columns)
    assert "expect_column_values_to_be_unique" in kinds_by_column[spec.id_column]
    for feature in spec.features:
        kinds = kinds_by_column[feature.name]
        assert ("expect_column_values_to_not_be_null" in kinds) is (not feature.nullable)
        if feature.categories:
            assert "expect_column_values_to_be_in_set" in kinds
        if feature.min is not None or feature.max is not None:
            assert "expect_column_values_to_be_between" in kinds


def test_missing_column_leads_the_summary_and_is_named(spec):
    column = numeric_int_feature(spec)
    report = validate_frame(valid_frame(spec).drop(columns=[column]), spec)
    assert not report.success
    lead = report.failed[0]
    assert lead.expectation == "expect_table_columns_to_match_set"
    assert f"missing ['{column}']" in lead.details
    summary = report.failure_summary()
    assert summary.index("expect_table_columns_to_match_set") < summary.index(f"{column}:")
    # the per-column checks on the missing column fail too, as "not evaluated", never crash
    on_missing = [o for o in report.failed if o.column == column]
    assert on_missing and all("column missing" in o.details for o in on_missing)


def test_extra_column_is_named(spec):
    report = validate_frame(valid_frame(spec).assign(promo_code="X1"), spec)
    assert not report.success
    assert report.failed[0].expectation == "expect_table_columns_to_match_set"
    assert "unexpected ['promo_code']" in report.failure_summary()


def test_duplicated_column_name_fails_the_column_count(spec):
    df = valid_frame(spec)
    column = ranged_float_feature(spec)
    report = validate_frame(pd.concat([df, df[[column]]], axis=1), spec)
    assert not report.success
    assert (None, "expect_table_column_count_to_equal") in failed_pairs(report)


def test_strings_in_numeric_column_fail_cleanly_naming_the_column(spec):
    column = ranged_float_feature(spec)
    df = valid_frame(spec)
    df[column] = df[column].map(lambda v: f"{v:.2f} EUR")
    report = validate_frame(df, spec)  # must not raise
    assert not report.success
    dtype_check = next(o for o in report.failed if o.expectation == "expect_column_dtype_to_be_of_kind")
    assert dtype_check.column == column
    assert "observed str" in dtype_check.details
    # GX raised inside the range check: reported as a failure carrying the exception's message
    range_check = next(o for o in report.failed if o.expectation == "expect_column_values_to_be_between")
    assert range_check.column == column and range_check.exception
    assert "could not be evaluated" in range_check.details
    assert f"{column}: expect_column_dtype_to_be_of_kind" in report.failure_summary()


def test_out_of_range_value_names_column_range_and_offenders(spec):
    column = numeric_int_feature(spec)
    feature = spec.feature(column)
    df = valid_frame(spec)
    df.loc[[3, 4], column] = [int(feature.max) + 50, int(feature.min) - 11]
    report = validate_frame(df, spec)
    assert failed_pairs(report) == {(column, "expect_column_values_to_be_between")}
    outcome = report.failed[0]
    assert outcome.unexpected_count == 2
    assert sorted(outcome.sample) == sorted([int(feature.max) + 50, int(feature.min) - 11])
    summary = report.failure_summary()
    assert summary.startswith(f"1 of {report.evaluated} expectations failed: {column}:")
    assert f"values in [{int(feature.min)}, {int(feature.max)}]" in summary
    assert f"2 of {ROWS} rows" in summary


def test_fractional_value_in_integer_feature_fails_but_whole_floats_pass(spec):
    column = numeric_int_feature(spec)
    df = valid_frame(spec)
    as_float = df.assign(**{column: df[column].astype("float64")})
    assert validate_frame(as_float, spec).success
    as_float.loc[5, column] = as_float.loc[5, column] + 0.5
    report = validate_frame(as_float, spec)
    assert failed_pairs(report) == {(column, "expect_column_values_to_be_whole_numbers")}
    assert report.failed[0].sample == [as_float.loc[5, column]]


def test_unknown_category_is_named_with_the_offending_value(spec):
    column = categorical_feature(spec)
    df = valid_frame(spec)
    df.loc[10, column] = "atlantis"
    report = validate_frame(df, spec)
    assert failed_pairs(report) == {(column, "expect_column_values_to_be_in_set")}
    assert report.failed[0].sample == ["atlantis"]
    assert "atlantis" in report.failure_summary()


def test_null_in_non_nullable_column_fails(spec):
    column = ranged_float_feature(spec, nullable=False)
    df = valid_frame(spec)
    df.loc[[1, 2, 3], column] = np.nan
    report = validate_frame(df, spec)
    assert failed_pairs(report) == {(column, "expect_column_values_to_not_be_null")}
    assert report.failed[0].unexpected_count == 3
    assert "3 of" in report.failure_summary() and "null" in report.failure_summary()


def test_null_target_and_unknown_label_fail(spec):
    df = valid_frame(spec).astype({spec.target: "float64"})
    df.loc[0, spec.target] = np.nan
    df.loc[1, spec.target] = 2
    report = validate_frame(df, spec)
    assert failed_pairs(report) == {
        (spec.target, "expect_column_values_to_not_be_null"),
        (spec.target, "expect_column_category_keys_to_be_in_set"),  # 0/1 compared as the texts "0"/"1"
    }
    assert "e.g. [2.0]" in report.failure_summary()


def test_duplicate_ids_fail_uniqueness(spec):
    df = valid_frame(spec)
    df.loc[5, spec.id_column] = df.loc[6, spec.id_column]
    report = validate_frame(df, spec)
    assert failed_pairs(report) == {(spec.id_column, "expect_column_values_to_be_unique")}
    assert report.failed[0].unexpected_count == 2  # both rows sharing the id


def test_timestamp_stored_as_text_fails_the_dtype_check(spec):
    df = valid_frame(spec)
    df[spec.timestamp_column] = df[spec.timestamp_column].astype(str)
    report = validate_frame(df, spec)
    assert failed_pairs(report) == {(spec.timestamp_column, "expect_column_dtype_to_be_of_kind")}


def test_empty_batch_fails_on_row_count(spec):
    report = validate_frame(valid_frame(spec).iloc[0:0], spec)
    assert not report.success
    assert failed_pairs(report) == {(None, "expect_table_row_count_to_be_between")}
    assert "observed 0" in report.failure_summary()


def test_too_few_rows_fail_on_row_count(spec):
    rows = spec.min_rows_per_batch - 1
    report = validate_frame(valid_frame(spec, rows=rows), spec)
    assert failed_pairs(report) == {(None, "expect_table_row_count_to_be_between")}
    assert f"row count in [{spec.min_rows_per_batch}, {spec.max_rows_per_batch}]; observed {rows}" in (
        report.failure_summary()
    )


def test_pandas_nullable_categorical_and_tz_aware_dtypes_are_accepted(spec):
    df = valid_frame(spec)
    int_column, float_column, cat_column = (
        numeric_int_feature(spec),
        ranged_float_feature(spec),
        categorical_feature(spec),
    )
    df = df.astype({int_column: "Int64", float_column: "Float64", cat_column: "category"})
    df[spec.timestamp_column] = df[spec.timestamp_column].dt.tz_localize("UTC")
    report = validate_frame(df, spec)
    assert report.success, report.failure_summary()


def test_data_docs_are_built_into_docs_dir_and_nothing_else_is_written(spec, tmp_path, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    docs_dir = tmp_path / "docs"
    df = valid_frame(spec)
    df.loc[0, categorical_feature(spec)] = "atlantis"
    report = validate_frame(df, spec, docs_dir=docs_dir, batch_name="2026-10-05")
    assert report.docs_dir == docs_dir.resolve()
    assert (docs_dir / "index.html").is_file()
    page = docs_dir / report.docs_index
    assert page.is_file() and page.suffix == ".html"
    assert report.docs_index.startswith(f"validations/{spec.name}/2026-10-05/")
    assert "atlantis" in page.read_text()
    assert list(workdir.iterdir()) == []  # no gx/ folder, no uncommitted/ files


def test_validation_makes_no_network_connection(spec):
    seen: list[str] = []
    recording = {"on": False}

    def audit(event: str, args: tuple) -> None:
        if recording["on"] and event in ("socket.connect", "socket.getaddrinfo", "urllib.Request"):
            seen.append(f"{event} {args!r}"[:200])

    sys.addaudithook(audit)  # hooks cannot be removed; this one is inert outside the block
    recording["on"] = True
    try:
        validate_frame(valid_frame(spec), spec)
    finally:
        recording["on"] = False
    assert seen == []


def test_suite_hash_is_stable_and_tracks_the_checks(spec):
    assert suite_hash(spec) == suite_hash(spec.model_copy(deep=True))
    assert len(suite_hash(spec)) == 64

    data = spec.model_dump()
    data["features"][0]["description"] = "reworded, no check changes"
    assert suite_hash(DatasetSpec.model_validate(data)) == suite_hash(spec)

    data = spec.model_dump()
    data["features"][0]["max"] = (data["features"][0]["max"] or 0) + 1
    assert suite_hash(DatasetSpec.model_validate(data)) != suite_hash(spec)

    data = spec.model_dump()
    data["features"].append({"name": "tenure_months", "kind": "numeric", "dtype": "int", "min": 0})
    assert suite_hash(DatasetSpec.model_validate(data)) != suite_hash(spec)


def test_result_json_is_strict_json(spec):
    df = valid_frame(spec)
    df.loc[[1, 2], ranged_float_feature(spec)] = np.nan
    df.loc[3, categorical_feature(spec)] = "atlantis"
    report = validate_frame(df, spec)
    text = json.dumps(report.result_json, allow_nan=False)
    assert json.loads(text)["success"] is False
    json.dumps(report.model_dump(mode="json"), allow_nan=False)  # the report itself is storable too


def test_unknown_result_format_is_refused_by_name(spec):
    with pytest.raises(ValueError, match="result_format must be one of"):
        validate_frame(valid_frame(spec), spec, result_format="VERBOSE")


@pytest.mark.parametrize("result_format", ["BOOLEAN_ONLY", "BASIC", "COMPLETE"])
def test_other_result_formats_still_name_the_failure(spec, result_format):
    column = categorical_feature(spec)
    df = valid_frame(spec)
    df.loc[10, column] = "atlantis"
    report = validate_frame(df, spec, result_format=result_format)
    assert failed_pairs(report) == {(column, "expect_column_values_to_be_in_set")}


def test_loading_validation_and_the_ingest_flows_does_not_import_great_expectations():
    code = ("import sys\n"
            "import mlcycle.tasks.validation.runner, mlcycle.tasks.validation.suite\n"
            "import mlcycle.tasks.validation.phrasing, mlcycle.tasks.ingest, mlcycle.flows.ingest\n"
            "print('great_expectations' in sys.modules)")
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
    )
    assert out.stdout.strip() == "False"


def test_great_expectations_keeps_no_validated_frame_alive(spec):
    """GX's process-wide current context outlives the call; the batch's frame must not (one frame per worker)."""
    import gc
    import weakref

    df = valid_frame(spec)
    frame = weakref.ref(df)
    assert validate_frame(df, spec).success
    del df
    gc.collect()
    assert frame() is None
