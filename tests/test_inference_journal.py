"""The inference log's write-ahead journal: a writer killed with answered requests still queued loses none.

The table is not the demo's: a multiclass flower table (numeric features with gaps, a categorical one with a
missing value, one probability per class), the shape that exercises every column kind the journal encodes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from mlcycle.tasks.inference_journal import JOURNAL_DIR
from mlcycle.tasks.inference_reader import read_inference_log
from mlcycle.tasks.storage import LocalStore
from tests.support.concurrency import at_once
from tests.support.env import ROOT
from tests.support.inference import flower_writer, flowers, send


def test_a_killed_writers_answered_requests_are_replayed_exactly_by_the_next_one(tmp_path):
    """A real process submits 40 requests (nothing uploaded yet: the flush is a minute away) and is SIGKILLed;
    the next writer on the same spill folder uploads every one of them, values intact, exactly once."""
    child = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from tests.support.inference import flower_writer, send
        log = flower_writer({str(tmp_path / "store")!r}, {str(tmp_path / "spill")!r}).start()
        print(send(log, 40), flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        sent = int(process.stdout.readline())
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    store = LocalStore(tmp_path / "store")
    assert store.list("inference/") == []  # the killed writer uploaded nothing: all of it was in memory

    status = flower_writer(tmp_path / "store", tmp_path / "spill", version=5).start().close()
    frame = read_inference_log(store)
    assert status.recovered_rows == sent == len(frame) and frame["request_id"].nunique() == 40
    assert set(frame["model_version"]) == {4}  # replayed as the version that answered, not the replayer's
    one = frame[frame.request_id == "req-7"].sort_values("row")
    columns, predictions = flowers(3, 7)
    np.testing.assert_allclose(one["sepal_length"], columns["sepal_length"])  # NaN where it was missing
    assert pd.isna(one["soil"].iloc[0]) and one["soil"].tolist()[1:] == list(columns["soil"][1:])
    assert one["label"].tolist() == list(predictions["label"])
    np.testing.assert_allclose(np.stack(one["probabilities"].to_numpy()), predictions["probabilities"])
    assert list((tmp_path / "spill" / JOURNAL_DIR).glob("*.wal")) == []  # nothing left to replay twice


def test_a_crash_after_the_upload_and_before_the_journal_is_deleted_writes_no_duplicate(tmp_path, monkeypatch):
    """The part keys come from the segment's name: replaying a segment whose part is already up overwrites
    the same object with the same rows."""
    spill = tmp_path / "spill"
    dying = flower_writer(tmp_path / "store", spill)
    sent = send(dying, 10)
    monkeypatch.setattr(dying._journal, "done", lambda segment, written: segment.release())  # killed here
    dying._drain()
    store = LocalStore(tmp_path / "store")
    assert len(read_inference_log(store)) == sent and len(list((spill / JOURNAL_DIR).glob("*.wal"))) == 1

    status = flower_writer(tmp_path / "store", spill).start().close()
    assert status.recovered_rows == sent
    assert len(read_inference_log(store)) == sent and len(store.list("inference/")) == 1


def test_a_live_writers_journal_is_never_taken_and_a_torn_last_record_is_not_replayed(tmp_path):
    spill = tmp_path / "spill"
    alive = flower_writer(tmp_path / "store", spill)
    sent = send(alive, 6)
    other = flower_writer(tmp_path / "store", spill).start()
    other.flush()
    assert other.status().recovered_rows == 0  # its segment is locked by a living writer
    alive.close()
    assert other.close().recovered_rows == 0
    assert len(read_inference_log(LocalStore(tmp_path / "store"))) == sent  # once, by its own writer

    dead = flower_writer(tmp_path / "store2", spill)
    sent = send(dead, 3)
    segment = dead._journal.current
    with open(segment.path, "ab") as fh:  # died inside the write of a fourth request: never answered
        fh.write(b"\x40\x00\x00\x00\x12\x34")
    segment.release()
    status = flower_writer(tmp_path / "store2", spill).start().close()
    assert status.recovered_rows == sent
    assert read_inference_log(LocalStore(tmp_path / "store2"))["request_id"].nunique() == 3


def test_a_corrupt_journal_is_moved_aside_with_a_warning_and_never_blocks_the_log(tmp_path, caplog):
    spill = tmp_path / "spill"
    dead = flower_writer(tmp_path / "store", spill)
    send(dead, 4)
    segment = dead._journal.current
    data = bytearray(segment.path.read_bytes())
    data[data.index(b'"request_id":"req-1"') + 20] ^= 0xFF  # a flipped byte inside the second of four records
    segment.path.write_bytes(bytes(data))
    segment.release()
    log = flower_writer(tmp_path / "store", spill).start()
    assert send(log, 2, first_seed=100)
    status = log.close()
    assert status.recovered_rows == 0 and status.written_rows == 1 + 2  # its own rows went up
    assert read_inference_log(LocalStore(tmp_path / "store"))["request_id"].tolist() == ["req-100", "req-101",
                                                                                         "req-101"]
    kept = list((spill / JOURNAL_DIR / "corrupt").glob("*.wal"))
    assert len(kept) == 1 and kept[0].read_bytes() == bytes(data)  # kept as found, for a human to look at
    assert "cannot be replayed" in caplog.text and "checksum" in caplog.text


def test_two_writers_racing_for_one_dead_journal_replay_it_once(tmp_path):
    spill = tmp_path / "spill"
    dead = flower_writer(tmp_path / "store", spill)
    sent = send(dead, 30)
    dead._journal.current.release()
    racers = [flower_writer(tmp_path / "store", spill) for _ in range(4)]
    _, errors = at_once(4, lambda i: racers[i]._recover_orphans())
    assert errors == []
    assert sum(r.status().recovered_rows for r in racers) == sent
    assert len(read_inference_log(LocalStore(tmp_path / "store"))) == sent


def test_a_writer_without_journal_or_with_a_full_disk_still_answers(tmp_path, caplog):
    """``journal: false`` writes no segment; a journal that cannot be written keeps the entry in memory
    (logged, said once) instead of failing the request."""
    quiet = flower_writer(tmp_path / "store", tmp_path / "spill", journal=False)
    send(quiet, 2)
    assert not (tmp_path / "spill" / JOURNAL_DIR).exists()
    assert quiet.close().written_rows == 3

    full = flower_writer(tmp_path / "store2", tmp_path / "spill2")

    def no_space(record):
        raise OSError(28, "No space left on device")

    full._journal.append = no_space
    assert send(full, 2) == 3
    status = full.close()
    assert status.written_rows == 3 and "journal" in (status.last_error or "")
    assert "predictions kept in memory only" in caplog.text


@pytest.mark.parametrize("requests", [1, 200])
def test_the_journal_replays_what_a_normal_stop_would_have_written(tmp_path, requests):
    """Same rows, same values whether the writer stopped cleanly or died and was replayed."""
    clean = flower_writer(tmp_path / "clean", tmp_path / "spill-clean")
    send(clean, requests)
    clean.close()
    dead = flower_writer(tmp_path / "replayed", tmp_path / "spill-dead")
    send(dead, requests)
    dead._journal.current.release()
    flower_writer(tmp_path / "replayed", tmp_path / "spill-dead").start().close()
    columns = ["request_id", "row", "plant_id", "sepal_length", "petal_count", "soil", "label", "probability",
               "traffic", "model_version"]
    a = read_inference_log(LocalStore(tmp_path / "clean")).sort_values(["request_id", "row"])[columns]
    b = read_inference_log(LocalStore(tmp_path / "replayed")).sort_values(["request_id", "row"])[columns]
    assert a.reset_index(drop=True).equals(b.reset_index(drop=True))
