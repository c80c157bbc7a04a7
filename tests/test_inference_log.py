"""The inference log: batched Parquet parts, never blocking, nothing lost on a normal stop or a store outage."""

from __future__ import annotations

import datetime as dt
import threading
import time

import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.inference_log import InferenceLogWriter
from mlcycle.tasks.inference_reader import inference_dates, join_labels, read_inference_log
from mlcycle.tasks.labels import LabelsError, normalize_labels, read_labels, write_labels
from mlcycle.tasks.storage import LocalStore, StoreUnavailable
from tests.support.env import make_settings
from tests.support.inference import columns, submit, writer


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return make_settings(tmp_path_factory.mktemp("log")).dataset


class FlakyStore(LocalStore):
    """A local store that can be switched down (every call raises StoreUnavailable) and back up."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.down = False
        self.puts = 0

    def put_bytes(self, key, data):
        if self.down:
            raise StoreUnavailable(f"{self.description}: cannot write {key!r}: endpoint unreachable")
        self.puts += 1
        return super().put_bytes(key, data)


def test_every_prediction_is_logged_with_inputs_outputs_and_model_version(store, tmp_path, spec):
    log = writer(store, spec, tmp_path).start()
    for i in range(5):
        assert submit(log, spec, f"r{i}", 3, seed=i)
    status = log.close()
    assert status.written_rows == 15 and status.dropped_rows == 0 and status.queued_rows == 0
    frame = read_inference_log(store)
    assert len(frame) == 15 and set(frame["request_id"]) == {f"r{i}" for i in range(5)}
    assert frame.groupby("request_id")["row"].apply(list).tolist() == [[0, 1, 2]] * 5
    assert (frame["model_version"] == 3).all() and (frame["model"] == "loans-default").all()
    assert {"ts", "endpoint", spec.id_column, *spec.feature_names, "probability", "label"} <= set(frame.columns)
    assert str(frame["age"].dtype) == "int64" and frame["income"].dtype == np.float64
    first = columns(spec, 3, seed=0)
    assert frame.loc[frame.request_id == "r0", "region"].tolist() == list(first["region"])
    days = sorted({ts.date() for ts in pd.to_datetime(frame["ts"], utc=True)})  # the UTC dates they were answered
    keys = store.list("inference/")
    assert sorted(k.split("/part-")[0] for k in keys) == [f"inference/date={day}" for day in days]  # a part a date
    for day in days:
        assert {ts.date() for ts in pd.to_datetime(read_inference_log(store, [day])["ts"], utc=True)} == {day}


def test_parts_are_batched_by_rows_and_split_by_utc_date(tmp_path, spec):
    store = LocalStore(tmp_path / "store")
    log = writer(store, spec, tmp_path, flush_rows=100).start()
    day1 = dt.datetime(2026, 10, 30, 23, 59, 59, tzinfo=dt.UTC)
    day2 = dt.datetime(2026, 10, 31, 0, 0, 1, tzinfo=dt.UTC)
    for i in range(10):
        submit(log, spec, f"a{i}", 10, ts=day1 if i < 5 else day2)
    log.flush()
    assert inference_dates(store) == [day1.date(), day2.date()]
    assert len(read_inference_log(store, [day1.date()])) == 50
    assert len(store.list("inference/")) == 2  # one part per date: 100 rows triggered one flush
    log.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path, spec):
    store = FlakyStore(tmp_path / "store")
    gate, stuck = threading.Event(), threading.Event()
    original = store.put_bytes

    def stuck_put(key, data):  # a stuck store
        stuck.set()
        gate.wait(10)
        return original(key, data)

    store.put_bytes = stuck_put
    log = writer(store, spec, tmp_path, queue_rows=50, flush_rows=10).start()
    submit(log, spec, "first", 10)  # taken by the writer, which then blocks in put
    assert stuck.wait(10), "the writer never tried to upload the first request"
    started = time.perf_counter()
    accepted = [submit(log, spec, f"r{i}", 10) for i in range(8)]
    elapsed = time.perf_counter() - started
    assert accepted == [True] * 5 + [False] * 3
    assert elapsed < 0.5  # never waits for the store
    status = log.status()
    assert status.dropped_rows == 30 and status.dropped_requests == 3
    gate.set()
    final = log.close()
    assert final.written_rows == 60 and final.dropped_rows == 30


def test_store_outage_spills_locally_and_reuploads_when_it_is_back(tmp_path, spec):
    store = FlakyStore(tmp_path / "store")
    store.down = True
    log = writer(store, spec, tmp_path, flush_rows=10, upload_attempts=2).start()
    for i in range(3):
        submit(log, spec, f"r{i}", 10)
    log.flush()
    status = log.status()
    assert status.spilled_parts >= 1 and status.failed_uploads >= 2 and "unreachable" in status.last_error
    assert not store.list("inference/") and list((tmp_path / "spill" / "inference").rglob("part-*.parquet"))
    store.down = False
    log._store_down_until = 0.0  # skip the back-off the writer keeps after an outage
    log.flush()
    assert len(read_inference_log(store)) == 30
    assert not list((tmp_path / "spill").rglob("part-*.parquet"))
    assert log.close().reuploaded_parts == status.spilled_parts


def test_a_stop_during_an_outage_keeps_every_record_for_the_next_process(tmp_path, spec):
    store = FlakyStore(tmp_path / "store")
    store.down = True
    log = writer(store, spec, tmp_path).start()
    submit(log, spec, "r0", 7)
    log.close()
    assert not store.list("inference/")
    store.down = False
    writer(store, spec, tmp_path).start().close()  # a new process with the same spill folder
    assert len(read_inference_log(store)) == 7


def test_labels_join_the_log_by_request_id_and_row(tmp_path, spec):
    store = LocalStore(tmp_path / "store")
    log = writer(store, spec, tmp_path).start()
    submit(log, spec, "r0", 3)
    submit(log, spec, "r1", 2)
    log.close()
    write_labels(store, spec, pd.DataFrame({"request_id": ["r0", "r0", "r1"], "row": [0, 2, 1],
                                            spec.target: [1, 0, 1]}))
    late = write_labels(store, spec, pd.DataFrame({"request_id": ["r0"], "row": [2], spec.target: [1]}),
                        now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5))
    assert late.key.startswith("labels/date=") and late.keys == ["request_id", "row"]
    joined = join_labels(read_inference_log(store), read_labels(store), spec).sort_values(["request_id", "row"])
    assert joined[spec.target].astype("Float64").tolist() == [1, pd.NA, 1, pd.NA, 1]  # the later label wins


def test_labels_by_id_column_and_bad_labels_are_named(tmp_path, spec):
    store = LocalStore(tmp_path / "store")
    log = writer(store, spec, tmp_path).start()
    submit(log, spec, "r0", 2)
    log.close()
    write_labels(store, spec, pd.DataFrame({spec.id_column: ["id-r0-1"], spec.target: [1]}))
    joined = join_labels(read_inference_log(store), read_labels(store), spec)
    assert joined[spec.target].astype("Float64").tolist() == [pd.NA, 1]
    write_labels(store, spec, pd.DataFrame({"request_id": ["r0"], "row": [0], spec.target: [0]}))
    joined = join_labels(read_inference_log(store), read_labels(store), spec)  # both kinds in one store
    assert joined[spec.target].astype("Float64").tolist() == [0, 1]
    with pytest.raises(LabelsError, match=r"must be one of the classes \['0', '1'\] \(dataset.classes\); bad "
                                          r"value\(s\) \['yes'\] at line\(s\) 3"):
        normalize_labels(pd.DataFrame({"request_id": ["a", "b"], "row": [0, 0], spec.target: [1, "yes"]}), spec)
    with pytest.raises(LabelsError, match="labels need columns request_id and row"):
        normalize_labels(pd.DataFrame({"x": [1], spec.target: [1]}), spec)
    with pytest.raises(LabelsError, match="the target column 'defaulted'"):
        normalize_labels(pd.DataFrame({"request_id": ["a"], "row": [0]}), spec)


def test_mlcycle_labels_imports_a_file_and_names_bad_rows(env_settings, monkeypatch, capsys, tmp_path):
    import json

    from tests.support.env import run_cli

    settings = env_settings()
    good = tmp_path / "outcomes.csv"
    good.write_text("request_id,row,defaulted\nabc,0,1\nabc,1,0\n")
    code, out, err = run_cli(monkeypatch, capsys, "labels", "--file", str(good), "--json")
    assert code == 0, err
    written = json.loads(out)
    assert written["rows"] == 2 and written["keys"] == ["request_id", "row"] and written["key"].startswith("labels/")
    assert len(read_labels(LocalStore(settings.store_root))) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,row,defaulted\nabc,0,1\nabc,1,maybe\n")
    code, _, err = run_cli(monkeypatch, capsys, "labels", "--file", str(bad))
    assert code == 1 and ("column 'defaulted' must be one of the classes ['0', '1'] (dataset.classes); bad value(s) "
                          "['maybe'] at line(s) 3") in err
    code, _, err = run_cli(monkeypatch, capsys, "labels", "--file", str(tmp_path / "missing.csv"))
    assert code == 2 and "must be an existing .csv or .parquet file" in err


# --------------------------------------------------------------------------------------------------
# every task's predictions, and canary traffic apart
# --------------------------------------------------------------------------------------------------


def task_spec(task: str):
    """A declaration of one of the real tables' shape (anes96: party identification 0..6; randhie: visits)."""
    from mlcycle.tasks.settings import DatasetSpec

    extra = {"multiclass": {"target": "PID", "classes": [0, 1, 2, 3, 4, 5, 6]},
             "regression": {"target": "mdvis", "target_min": 0}}.get(task, {"target": "had_affair"})
    return DatasetSpec(name=f"t-{task}", task=task, id_column="rid", timestamp_column="ts", **extra, features=[
        {"name": "age", "kind": "numeric", "min": 0, "max": 120},
        {"name": "educ", "kind": "categorical", "categories": [1, 2, 3]}])


def task_writer(store, spec, tmp_path):
    return InferenceLogWriter(store, model=spec.name, model_version=1, features=spec.features,
                              id_column=spec.id_column, spill_dir=tmp_path / "spill", task=spec.task,
                              flush_interval_seconds=60.0)


def task_predictions(spec, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    from mlcycle.tasks.predictions import prediction_columns

    rng = np.random.default_rng(seed)
    if spec.task == "multiclass":
        scores = rng.dirichlet(np.ones(7), n)
    elif spec.task == "regression":
        scores = rng.gamma(2.0, 2.0, n)
    else:
        scores = rng.uniform(0, 1, n)
    return prediction_columns(scores, spec.task, threshold=0.5, classes=spec.class_labels)


def submit_task(log, spec, request_id: str, n: int, traffic: str = "live", seed: int = 0) -> dict:
    predictions = task_predictions(spec, n, seed)
    columns = {"age": np.linspace(20, 60, n), "educ": np.array(["1", "2", "3"] * n, dtype=object)[:n]}
    assert log.submit(request_id, "predict", columns, [f"{request_id}-{i}" for i in range(n)], predictions,
                      traffic=traffic)
    return predictions


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_each_task_logs_its_prediction_columns_and_the_traffic(tmp_path, task):
    from mlcycle.tasks.inference_rows import PREDICTION_COLUMNS

    spec = task_spec(task)
    store = LocalStore(tmp_path / "store")
    log = task_writer(store, spec, tmp_path).start()
    sent = submit_task(log, spec, "live-1", 4)
    submit_task(log, spec, "canary-1", 3, traffic="canary", seed=1)
    log.close()
    frame = read_inference_log(store, traffic=None)
    assert list(frame.columns[-len(PREDICTION_COLUMNS[task]) - 1:]) == [*PREDICTION_COLUMNS[task], "traffic"]
    assert frame["traffic"].tolist() == ["live"] * 4 + ["canary"] * 3
    mine = frame[frame["request_id"] == "live-1"]
    if task == "multiclass":
        assert mine["label"].tolist() == sent["label"].tolist() and set(mine["label"]) <= set(spec.class_labels)
        assert np.array_equal(np.stack(mine["probabilities"].to_numpy()), sent["probabilities"])
        assert mine["probability"].tolist() == sent["probability"].tolist()
    elif task == "regression":
        assert mine["prediction"].tolist() == sent["prediction"].tolist()
    else:
        assert mine["probability"].tolist() == sent["probability"].tolist()
        assert mine["label"].tolist() == sent["label"].tolist()
    assert read_inference_log(store)["request_id"].unique().tolist() == ["live-1"]  # monitoring reads live rows
    assert read_inference_log(store, traffic="canary")["request_id"].unique().tolist() == ["canary-1"]
    assert list(read_inference_log(store, columns=["age"]).columns) == ["age"] and \
        len(read_inference_log(store, columns=["age"])) == 4


def test_a_prediction_that_is_not_the_tasks_is_refused_at_submit(tmp_path):
    spec = task_spec("multiclass")
    log = task_writer(LocalStore(tmp_path / "store"), spec, tmp_path)
    with pytest.raises(ValueError, match=r"a multiclass prediction is logged as \['label', 'probability', "
                                         r"'probabilities'\]"):
        log.submit("r", "predict", {}, None, {"probability": np.array([0.5]), "label": np.array([1])})
    with pytest.raises(ValueError, match="'shadow'"):
        log.submit("r", "predict", {}, None, task_predictions(spec, 1), traffic="shadow")


def test_rows_of_a_log_written_before_the_traffic_column_count_as_live(tmp_path, spec):
    import pyarrow as pa

    from mlcycle.tasks.inference_log import INFERENCE_PREFIX, part_key
    from mlcycle.tasks.inference_rows import table_bytes

    store = LocalStore(tmp_path / "store")
    old = pa.table({"request_id": ["old"] * 2, "row": pa.array([0, 1], pa.int32()), "probability": [0.1, 0.9],
                    "label": pa.array([0, 1], pa.int8())})
    store.put_bytes(part_key(INFERENCE_PREFIX, dt.date(2026, 10, 1)), table_bytes(old))
    log = writer(store, spec, tmp_path).start()
    log.submit("new", "predict", columns(spec, 1), None, {"probability": np.array([0.5]), "label": np.array([1])},
               traffic="canary", ts=dt.datetime(2026, 10, 1, 12, tzinfo=dt.UTC))
    log.close()
    everything = read_inference_log(store, traffic=None)
    assert everything.set_index("request_id")["traffic"].to_dict() == {"old": "live", "new": "canary"}
    assert read_inference_log(store)["request_id"].tolist() == ["old", "old"]


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_labels_are_typed_per_task_and_never_join_a_canary_row(tmp_path, task):
    spec = task_spec(task)
    store = LocalStore(tmp_path / "store")
    log = task_writer(store, spec, tmp_path).start()
    submit_task(log, spec, "live-1", 2)
    submit_task(log, spec, "canary-1", 2, traffic="canary")
    log.close()
    outcome = {"binary": [1, 0.0], "multiclass": [6, "3"], "regression": [2, 7.5]}[task]
    write_labels(store, spec, pd.DataFrame({"request_id": ["live-1", "live-1", "canary-1", "canary-1"],
                                            "row": [0, 1, 0, 1], spec.target: outcome * 2}))
    write_labels(store, spec, pd.DataFrame({spec.id_column: ["canary-1-0"], spec.target: outcome[:1]}))
    stored = read_labels(store)[spec.target]
    joined = join_labels(read_inference_log(store, traffic=None), read_labels(store), spec)
    by_row = dict(zip(joined["request_id"] + "/" + joined["row"].astype(str), joined[spec.target], strict=True))
    if task == "regression":
        assert stored.dtype == np.float64 and stored.tolist()[:2] == [2.0, 7.5]
        assert by_row["live-1/0"] == 2.0 and by_row["live-1/1"] == 7.5
        assert np.isnan(by_row["canary-1/0"]) and np.isnan(by_row["canary-1/1"])
    else:
        want = {"binary": ["1", "0"], "multiclass": ["6", "3"]}[task]
        assert stored.tolist()[:2] == want
        assert [by_row["live-1/0"], by_row["live-1/1"]] == want
        assert by_row["canary-1/0"] is None and by_row["canary-1/1"] is None


def test_a_label_outside_the_declared_classes_or_range_is_refused_naming_it():
    multiclass, regression = task_spec("multiclass"), task_spec("regression")
    frame = pd.DataFrame({"request_id": ["a", "b", "c"], "row": [0, 0, 0], "PID": [1, 7, "x"]})
    with pytest.raises(LabelsError, match=r"column 'PID' must be one of the classes \['0', '1', '2', '3', '4', '5', "
                                          r"'6'\] \(dataset.classes\); bad value\(s\) \['7', 'x'\] at line\(s\) 3, 4"):
        normalize_labels(frame, multiclass)
    assert normalize_labels(frame.head(1).assign(PID=[1.0]), multiclass)["PID"].tolist() == ["1"]
    frame = pd.DataFrame({"request_id": ["a", "b"], "row": [0, 0], "mdvis": [-1, "many"]})
    with pytest.raises(LabelsError, match=r"column 'mdvis' must be a number in \[0, inf\]; bad value\(s\) "
                                          r"\['-1', 'many'\] at line\(s\) 2, 3"):
        normalize_labels(frame, regression)
