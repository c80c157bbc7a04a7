"""Sources: the deterministic simulator with its drift schedule, and the landing zone's bad files."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.landing import LandingZone
from mlcycle.tasks.settings import DriftEvent, SimulatorSettings
from mlcycle.tasks.simulator import simulate_batch
from mlcycle.tasks.sources import SourceError, date_range, parse_date

DAY = dt.date(2026, 10, 5)


def test_simulated_batch_matches_the_declared_columns_and_types(settings):
    frame = simulate_batch(DAY, settings.simulator, settings.dataset).frame
    spec = settings.dataset
    assert list(frame.columns) == spec.columns
    assert len(frame) == settings.simulator.rows_per_day
    assert frame[spec.id_column].is_unique
    assert (frame[spec.timestamp_column].dt.date == DAY).all()
    for f in spec.numeric_features:
        values = frame[f.name].dropna()
        assert values.between(f.min, f.max).all(), f.name
    for f in spec.categorical_features:
        assert set(frame[f.name].dropna()) <= set(f.categories), f.name
    assert set(frame[spec.target].unique()) == {0, 1}


def test_same_seed_and_date_give_identical_batch(settings):
    a = simulate_batch(DAY, settings.simulator, settings.dataset).frame
    b = simulate_batch(DAY, settings.simulator, settings.dataset).frame
    pd.testing.assert_frame_equal(a, b)


def test_other_date_or_seed_gives_other_batch(settings):
    a = simulate_batch(DAY, settings.simulator, settings.dataset).frame
    b = simulate_batch(DAY + dt.timedelta(days=1), settings.simulator, settings.dataset).frame
    c = simulate_batch(DAY, settings.simulator.model_copy(update={"seed": 7}), settings.dataset).frame
    assert not a["income"].equals(b["income"]) and not a["income"].equals(c["income"])


def test_label_depends_on_features_non_trivially(settings):
    frame = simulate_batch(DAY, settings.simulator.model_copy(update={"rows_per_day": 20_000}),
                           settings.dataset).frame
    rate = frame["defaulted"].mean()
    assert 0.1 < rate < 0.4
    high_debt = frame["debt_ratio"] > frame["debt_ratio"].quantile(0.8)
    assert frame.loc[high_debt, "defaulted"].mean() > 1.5 * frame.loc[~high_debt, "defaulted"].mean()
    by_emp = frame.groupby("employment_type")["defaulted"].mean()
    assert by_emp["unemployed"] > by_emp["salaried"]


def _sim(settings, events, rows=20_000):
    return settings.simulator.model_copy(update={"rows_per_day": rows, "drift": events})


def test_drift_shift_moves_a_numeric_feature_only_from_its_start_date(settings):
    events = [DriftEvent(start=DAY, kind="shift", feature="debt_ratio", amount=1.0)]
    before = simulate_batch(DAY - dt.timedelta(days=1), _sim(settings, events), settings.dataset).frame
    after = simulate_batch(DAY, _sim(settings, events), settings.dataset).frame
    plain = simulate_batch(DAY, _sim(settings, []), settings.dataset).frame
    assert after["debt_ratio"].mean() - plain["debt_ratio"].mean() == pytest.approx(
        plain["debt_ratio"].std(), rel=0.1)
    baseline_prev = simulate_batch(DAY - dt.timedelta(days=1), _sim(settings, []), settings.dataset).frame
    pd.testing.assert_frame_equal(before, baseline_prev)


def test_drift_concept_changes_the_label_relationship_not_the_inputs(settings):
    events = [DriftEvent(start=DAY, kind="concept", feature="credit_score", amount=-1.0)]
    drifted = simulate_batch(DAY, _sim(settings, events), settings.dataset).frame
    plain = simulate_batch(DAY, _sim(settings, []), settings.dataset).frame
    pd.testing.assert_series_equal(drifted["credit_score"], plain["credit_score"])
    corr_plain = np.corrcoef(plain["credit_score"], plain["defaulted"])[0, 1]
    corr_drift = np.corrcoef(drifted["credit_score"], drifted["defaulted"])[0, 1]
    assert corr_plain < -0.05 < 0.05 < corr_drift


def test_drift_missing_and_new_category(settings):
    events = [DriftEvent(start=DAY, kind="missing", feature="age", amount=0.2),
              DriftEvent(start=DAY, kind="new_category", feature="region", amount=0.1, category="islands")]
    frame = simulate_batch(DAY, _sim(settings, events), settings.dataset).frame
    assert frame["age"].isna().mean() == pytest.approx(0.2, abs=0.02)
    assert (frame["region"] == "islands").mean() == pytest.approx(0.1, abs=0.02)


def test_drift_on_unknown_feature_is_a_config_error(tmp_path):
    from mlcycle.tasks.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="unknown feature 'salary'"):
        load_settings(home=tmp_path, simulator=SimulatorSettings(
            drift=[DriftEvent(start=DAY, kind="shift", feature="salary", amount=1.0)]))


@pytest.mark.parametrize("bad", ["2026-13-01", "2026-02-30", "yesterday", "2026/10/01", "20261001", ""])
def test_invalid_dates_are_refused_with_the_expected_format(bad):
    with pytest.raises(SourceError, match="YYYY-MM-DD"):
        parse_date(bad)


def test_date_range_is_inclusive_and_refuses_reversed_ranges():
    assert date_range(DAY, DAY + dt.timedelta(days=2))[-1] == DAY + dt.timedelta(days=2)
    with pytest.raises(SourceError, match="before start"):
        date_range(DAY, DAY - dt.timedelta(days=1))


# ---------------------------------------------------------------------------------------------------
# landing zone
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def landing(tmp_path):
    root = tmp_path / "landing"
    root.mkdir()
    return root


def _good_frame(settings, rows=300):
    return simulate_batch(DAY, settings.simulator.model_copy(update={"rows_per_day": rows}), settings.dataset).frame


def test_landing_reads_csv_and_parquet_and_names_files_with_sha(settings, landing):
    frame = _good_frame(settings)
    frame.iloc[:150].to_csv(landing / f"loans_date={DAY}.csv", index=False)
    folder = landing / f"date={DAY}"
    folder.mkdir()
    frame.iloc[150:].to_parquet(folder / "part-1.parquet")
    batch = LandingZone(str(landing)).fetch(DAY, settings.dataset)
    assert len(batch.frame) == 300
    assert sorted(f.name for f in batch.files) == [f"date={DAY}/part-1.parquet", f"loans_date={DAY}.csv"]
    assert all(len(f.sha256) == 64 for f in batch.files)
    assert str(batch.frame[settings.dataset.timestamp_column].dtype).startswith("datetime64")


def test_landing_with_no_file_for_the_date_names_date_and_path(settings, landing):
    with pytest.raises(SourceError, match=rf"no data for {DAY}.*{landing.name}"):
        LandingZone(str(landing)).fetch(DAY, settings.dataset)


def test_landing_empty_file_is_named(settings, landing):
    (landing / f"date={DAY}.csv").write_bytes(b"")
    with pytest.raises(SourceError, match=rf"'date={DAY}.csv' is empty"):
        LandingZone(str(landing)).fetch(DAY, settings.dataset)


def test_landing_header_only_csv_has_no_rows(settings, landing):
    (landing / f"date={DAY}.csv").write_text(",".join(settings.dataset.columns) + "\n")
    with pytest.raises(SourceError, match="has no rows"):
        LandingZone(str(landing)).fetch(DAY, settings.dataset)


def test_landing_truncated_parquet_is_named(settings, landing):
    path = landing / f"date={DAY}.parquet"
    _good_frame(settings).to_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=rf"'date={DAY}.parquet' is truncated or not valid Parquet"):
        LandingZone(str(landing)).fetch(DAY, settings.dataset)


def test_landing_garbage_csv_is_named(settings, landing):
    (landing / f"date={DAY}.csv").write_bytes(b'a,b\n"unterminated,1\n\xff\xfe')
    with pytest.raises(SourceError, match=rf"'date={DAY}.csv'"):
        LandingZone(str(landing)).fetch(DAY, settings.dataset)


def test_landing_missing_folder_is_named(settings, tmp_path):
    with pytest.raises(SourceError, match="is not a folder"):
        LandingZone(str(tmp_path / "nope")).fetch(DAY, settings.dataset)


def test_landing_under_a_bucket_prefix(settings, store):
    frame = _good_frame(settings)
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf)
    store.put_bytes(f"incoming/date={DAY}/batch.parquet", buf.getvalue())
    batch = LandingZone("incoming", store=store).fetch(DAY, settings.dataset)
    assert len(batch.frame) == len(frame) and batch.files[0].name == f"date={DAY}/batch.parquet"
