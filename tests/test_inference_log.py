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
from tests.conftest import make_settings


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


def columns(spec, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for f in spec.features:
        if f.kind == "numeric":
            out[f.name] = rng.uniform(f.min or 0, f.max or 1, n).round(0 if f.dtype == "int" else 3)
        else:
            out[f.name] = np.array(rng.choice(f.categories, n), dtype=object)
    return out


def writer(store, spec, tmp_path, **kw) -> InferenceLogWriter:
    options = {"queue_rows": 10_000, "flush_rows": 1_000, "flush_interval_seconds": 60.0, "retry_delay_seconds": 0.01,
               **kw}
    return InferenceLogWriter(store, model="loans-default", model_version=3, features=spec.features,
                              id_column=spec.id_column, spill_dir=tmp_path / "spill", **options)


def submit(log, spec, request_id: str, n: int, ts=None, seed=0) -> bool:
    probabilities = np.linspace(0, 1, n)
    return log.submit(request_id, "predict", columns(spec, n, seed), [f"id-{request_id}-{i}" for i in range(n)],
                      probabilities, (probabilities >= 0.5).astype(np.int64), ts=ts)


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
    keys = store.list("inference/")
    assert keys and all(k.startswith(f"inference/date={dt.datetime.now(dt.UTC).date()}/part-") for k in keys)


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
    gate = threading.Event()
    original = store.put_bytes
    store.put_bytes = lambda key, data: (gate.wait(10), original(key, data))[1]  # a stuck store
    log = writer(store, spec, tmp_path, queue_rows=50, flush_rows=10).start()
    submit(log, spec, "first", 10)  # taken by the writer, which then blocks in put
    time.sleep(0.2)
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
    with pytest.raises(LabelsError, match="must be 0 or 1; bad value.*'yes'.*line\\(s\\) 3"):
        normalize_labels(pd.DataFrame({"request_id": ["a", "b"], "row": [0, 0], spec.target: [1, "yes"]}), spec)
    with pytest.raises(LabelsError, match="labels need columns request_id and row"):
        normalize_labels(pd.DataFrame({"x": [1], spec.target: [1]}), spec)
    with pytest.raises(LabelsError, match="the target column 'defaulted'"):
        normalize_labels(pd.DataFrame({"request_id": ["a"], "row": [0]}), spec)


def test_mlcycle_labels_imports_a_file_and_names_bad_rows(env_settings, monkeypatch, capsys, tmp_path):
    import json

    from tests.test_cli import run_cli

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
    assert code == 1 and "column 'defaulted' must be 0 or 1; bad value(s) ['maybe'] at line(s) 3" in err
    code, _, err = run_cli(monkeypatch, capsys, "labels", "--file", str(tmp_path / "missing.csv"))
    assert code == 2 and "must be an existing .csv or .parquet file" in err
