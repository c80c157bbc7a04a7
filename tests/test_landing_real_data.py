"""Real tables through the landing zone as they really come: extra columns, no id, no timestamp, numeric codes.

Each declaration is what `mlcycle init` wrote from the whole table; the landing exports are daily slices of
it with an export id and a free-text note no declaration names (tests/support/datasets.py: write_landing).
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlcycle.tasks.ingest import ingest_date
from mlcycle.tasks.landing import LandingZone
from mlcycle.tasks.partitions import list_partitions, read_manifest, read_partition
from mlcycle.tasks.project import init_project
from mlcycle.tasks.settings import load_settings
from mlcycle.tasks.sources import SourceError, chosen_source
from mlcycle.tasks.storage import open_store
from tests.support.datasets import TABLES, daily_batches, write_landing

START = dt.date(2026, 10, 1)
DAYS = 3
EXTRAS = ["export_id", "note"]


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, Path]:
    """The config `mlcycle init` writes for each real table, exported whole as CSV."""
    folder = tmp_path_factory.mktemp("configs")
    out = {}
    for name, make in TABLES.items():
        table = make()
        export = folder / f"{name}.csv"
        table.frame.to_csv(export, index=False)
        out[name] = folder / f"{name}.yaml"
        init_project(export, out[name], target=table.target)
    return out


def first_days(name: str, rows: int = 200) -> list[tuple[dt.date, pd.DataFrame]]:
    """The first DAYS dates of the table's random daily stream, ``rows`` rows each."""
    return [(day, frame.iloc[:rows]) for day, frame in daily_batches(TABLES[name](), START, 20, drifted=False)[:DAYS]]


def settings_for(monkeypatch, tmp_path: Path, config: Path, landing: Path, home: str = "home", **overrides):
    monkeypatch.setenv("MLCYCLE_CONFIG", str(config))
    return load_settings(home=tmp_path / home, landing_path=str(landing), **overrides)


def with_ingest(settings, **ingest):
    return settings.model_copy(update={"ingest": settings.ingest.model_copy(update=ingest)})


def snapshot(store, prefix: str) -> dict[str, bytes]:
    return {key: store.get_bytes(key) for key in store.list(prefix)}


# --------------------------------------------------------------------------------------------------
# the real ingest flow, in-process on the session harness
# --------------------------------------------------------------------------------------------------


@pytest.mark.flow
def test_landing_exports_with_extras_and_no_ids_go_through_the_ingest_flows(configs, tmp_path, monkeypatch,
                                                                             env_settings, prefect_harness):
    from mlcycle.flows.ingest import backfill_flow, ingest_flow

    landing = tmp_path / "landing"
    write_landing(landing, first_days("fair"))
    monkeypatch.setenv("MLCYCLE_CONFIG", str(configs["fair"]))
    settings = env_settings(landing_path=str(landing), retries__ingest__delay_seconds="0.2")
    report = backfill_flow(start=START.isoformat(), end=(START + dt.timedelta(days=DAYS - 1)).isoformat())
    assert report.count("validated") == DAYS, report.summary()

    store = open_store(settings)
    spec = settings.dataset
    for day in list_partitions(store, "validated"):
        manifest = read_manifest(store, "validated", day)
        assert manifest.source.dropped_columns == EXTRAS and not set(EXTRAS) & set(manifest.columns)
        assert manifest.source.generated_ids and manifest.source.timestamps_from_file_date
        assert any("ingest.extra_columns: ignore" in note for note in manifest.source.notes)
        frame = read_partition(store, manifest.ref())
        ids = frame[spec.id_column]
        assert ids.is_unique and all(re.fullmatch(rf"{day}-[0-9a-f]{{12}}-\d{{7}}", i) for i in ids)
        assert (frame[spec.timestamp_column] == pd.Timestamp(day, tz="UTC")).all()
        assert set(frame[spec.target]) <= {"0", "1"} and set(frame["occupation"]) <= {"1", "2", "3", "4", "5", "6"}

    # re-ingesting a date changes nothing; a fresh store gets byte-identical partitions (the same ids)
    before = snapshot(store, "validated/")
    assert ingest_flow(date=START.isoformat()).data_sha256 == read_manifest(store, "validated", START).data_sha256
    assert snapshot(store, "validated/") == before
    fresh = settings.model_copy(update={"home": tmp_path / "fresh"})
    for day in list_partitions(store, "validated"):
        manifest, _ = ingest_date(fresh, day)
        original = read_manifest(store, "validated", day)
        assert manifest.data_sha256 == original.data_sha256
        assert open_store(fresh).get_bytes(manifest.data_key) == store.get_bytes(original.data_key)


@pytest.mark.flow
def test_extra_columns_quarantine_names_them_and_never_reach_validated(configs, tmp_path, monkeypatch, env_settings,
                                                                       prefect_harness):
    from mlcycle.flows.ingest import ingest_flow

    landing = tmp_path / "landing"
    write_landing(landing, first_days("anes96", rows=100)[:1])
    monkeypatch.setenv("MLCYCLE_CONFIG", str(configs["anes96"]))
    settings = env_settings(landing_path=str(landing), ingest__extra_columns="quarantine",
                            retries__ingest__delay_seconds="0.2")
    state = ingest_flow(date=START.isoformat(), return_state=True)
    assert state.is_failed() and "quarantined" in state.message
    assert "unexpected ['export_id', 'note']" in state.message
    store = open_store(settings)
    assert list_partitions(store, "validated") == [] and list_partitions(store, "quarantine") == [START]
    manifest = read_manifest(store, "quarantine", START)
    assert manifest.source.dropped_columns == [] and {"export_id", "note"} <= set(manifest.columns)


# --------------------------------------------------------------------------------------------------
# categories and classes as canonical texts; validation per task
# --------------------------------------------------------------------------------------------------


def test_a_category_written_1_0_in_csv_and_1_in_parquet_is_one_category(configs, tmp_path, monkeypatch):
    (first, csv_rows), (second, parquet_rows) = first_days("fair")[:2]
    landing = tmp_path / "landing"
    write_landing(landing, [(first, csv_rows)])  # fair's codes are floats: the CSV says 1.0, 2.0, ...
    assert re.search(r",\d\.0,", (landing / f"date={first}" / "export.csv").read_text().split("\n")[1])
    as_ints = parquet_rows.astype({c: "int64" for c in TABLES["fair"]().categorical} | {"had_affair": "int64"})
    write_landing(landing, [(second, as_ints)], fmt="parquet")
    settings = settings_for(monkeypatch, tmp_path, configs["fair"], landing)

    store = open_store(settings)
    frames = []
    for day in (first, second):
        manifest, outcome = ingest_date(settings, day)
        assert manifest.zone == "validated", outcome.summary
        frames.append(read_partition(store, manifest.ref()))
    for column in ["occupation", "occupation_husb", "religious", "had_affair"]:
        seen = [set(frame[column]) for frame in frames]
        assert seen[0] | seen[1] <= {"0", "1", "2", "3", "4", "5", "6"}, (column, seen)
        assert seen[0] & seen[1], column  # the same categories, whatever the file said
    assert frames[0].dtypes.to_dict() == frames[1].dtypes.to_dict()


@pytest.mark.parametrize("name, column, bad, expected", [
    ("fair", "had_affair", 2, "expect_column_category_keys_to_be_in_set"),  # binary: a third class
    ("anes96", "PID", 9, "expect_column_category_keys_to_be_in_set"),  # multiclass: an undeclared class
    ("randhie", "mdvis", 1000, "expect_column_values_to_be_between"),  # regression: beyond target_max
    ("anes96", "selfLR", 8, "expect_column_values_to_be_in_set"),  # a numeric-coded category never declared
])
def test_a_bad_value_is_quarantined_naming_column_and_value(configs, tmp_path, monkeypatch, name, column, bad,
                                                            expected):
    (day, rows), = first_days(name, rows=100)[:1]
    rows = rows.copy()
    rows.loc[3, column] = bad
    landing = tmp_path / "landing"
    write_landing(landing, [(day, rows)])
    manifest, outcome = ingest_date(settings_for(monkeypatch, tmp_path, configs[name], landing), day)
    assert manifest.zone == "quarantine"
    assert [(line.split(":")[0], expected in line) for line in outcome.record.failed] == [(column, True)]
    assert f"{column}: {expected}" in outcome.summary and str(bad) in outcome.summary


def test_a_regression_target_must_be_a_number(configs, tmp_path, monkeypatch):
    (day, rows), = first_days("randhie", rows=100)[:1]
    rows = rows.astype({"mdvis": object})
    rows.loc[5, "mdvis"] = "many"
    landing = tmp_path / "landing"
    write_landing(landing, [(day, rows)])
    manifest, outcome = ingest_date(settings_for(monkeypatch, tmp_path, configs["randhie"], landing), day)
    assert manifest.zone == "quarantine" and "mdvis: expect_column_dtype_to_be_of_kind" in outcome.summary


# --------------------------------------------------------------------------------------------------
# the column map, and the modes that require a column
# --------------------------------------------------------------------------------------------------


def test_the_column_map_renames_and_a_mapped_column_missing_is_named(configs, tmp_path, monkeypatch):
    (day, rows), = first_days("anes96", rows=100)[:1]
    landing = tmp_path / "landing"
    write_landing(landing, [(day, rows.rename(columns={"PID": "PartyID", "TVnews": "tv_days"}))])
    settings = with_ingest(settings_for(monkeypatch, tmp_path, configs["anes96"], landing),
                           columns={"PartyID": "PID", "tv_days": "TVnews"})
    manifest, outcome = ingest_date(settings, day)
    assert manifest.zone == "validated", outcome.summary
    assert manifest.source.renamed == {"PartyID": "PID", "tv_days": "TVnews"}

    wrong = with_ingest(settings, columns={"Party": "PID"})
    with pytest.raises(SourceError, match=rf"landing file 'date={day}/export.csv' has no column 'Party'.*'PID'"):
        LandingZone(str(landing)).fetch(day, wrong.dataset, wrong.ingest)


def test_ids_and_timestamps_from_a_column_require_it(configs, tmp_path, monkeypatch):
    (day, rows), = first_days("fair", rows=50)[:1]
    landing = tmp_path / "landing"
    write_landing(landing, [(day, rows)])
    settings = settings_for(monkeypatch, tmp_path, configs["fair"], landing)
    with pytest.raises(SourceError, match="has no id column 'row_id'.*set ingest.ids: generate"):
        ingest_date(with_ingest(settings, ids="column"), day)
    with pytest.raises(SourceError, match="has no timestamp column 'timestamp'.*set ingest.timestamps: file_date"):
        ingest_date(with_ingest(settings, timestamps="column"), day)
    assert open_store(settings).list("") == []  # refused before any write
    # with the id in the data, it is read, not generated
    mapped = with_ingest(settings, ids="column", columns={"export_id": "row_id"})
    manifest, outcome = ingest_date(mapped, day)
    assert manifest.zone == "validated", outcome.summary
    assert not manifest.source.generated_ids and manifest.source.dropped_columns == ["note"]


# --------------------------------------------------------------------------------------------------
# the simulator generates only its own dataset
# --------------------------------------------------------------------------------------------------


SIMULATOR_ONLY = ("the simulator generates only the demo loans dataset; set ingest.source: landing and "
                  "MLCYCLE_LANDING_PATH")


def test_the_simulator_refuses_another_declaration_before_any_write(configs, tmp_path, monkeypatch):
    monkeypatch.setenv("MLCYCLE_CONFIG", str(configs["randhie"]))
    settings = load_settings(home=tmp_path / "home", ingest={"source": "simulator"})
    with pytest.raises(SourceError) as refused:
        chosen_source(settings)
    assert str(refused.value).endswith(SIMULATOR_ONLY) and "'randhie'" in str(refused.value)
    with pytest.raises(SourceError, match="generates only the demo loans dataset"):
        ingest_date(settings, START)
    assert not (tmp_path / "home").exists() or open_store(settings).list("") == []
    # the demo's own declaration is the simulator's
    monkeypatch.setenv("MLCYCLE_CONFIG", str(Path(__file__).resolve().parents[1] / "mlcycle.yaml"))
    assert chosen_source(load_settings(home=tmp_path / "demo")) == "simulator"


def test_cli_ingest_refuses_the_simulator_for_another_dataset_at_once(configs, tmp_path, monkeypatch, capsys,
                                                                       env_settings):
    from mlcycle.flows.cli import main

    monkeypatch.setenv("MLCYCLE_CONFIG", str(configs["fair"]))
    env_settings()
    monkeypatch.setattr(sys, "argv", ["mlcycle", "ingest", "--date", START.isoformat(), "--source", "simulator"])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert err.strip().endswith(SIMULATOR_ONLY) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "home").exists()  # no flow ran, nothing was written
