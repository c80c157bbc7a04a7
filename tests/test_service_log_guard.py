"""The service-log guard (tests/support/logs.py) reads real log shapes right: one problem per traceback,
chained tracebacks included, and an expected entry accounts only for the problem it names."""

from __future__ import annotations

from pathlib import Path

from tests.support.logs import SQLITE_HEARTBEAT_RACE, Expected, problems, unexpected_problems

# The shape Prefect's server wrote in CI (frames shortened): an ERROR line, a traceback, a chained one.
HEARTBEAT_RACE = """\
09:43:20.001 | INFO    | prefect.server - a routine line
09:43:24.293 | ERROR   | prefect.server.utilities.worker_channel - Worker channel heartbeat persistence failed: \
work_pool=mlcycle-process worker_name=mlcycle-worker-33919
Traceback (most recent call last):
  File "sqlalchemy/engine/base.py", line 2000, in _exec_single_context
    self.dialect.do_execute(
sqlite3.OperationalError: database is locked

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "prefect/server/utilities/worker_channel.py", line 683, in _receive_loop
    pool_updated = await _persist_worker_channel_heartbeat(
sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked
09:43:25.000 | INFO    | prefect.server - the next routine line
"""


def test_a_chained_traceback_is_one_problem_through_its_last_exception(tmp_path: Path):
    log = tmp_path / "prefect-server.log"
    log.write_text(HEARTBEAT_RACE)
    found = problems(log)
    assert len(found) == 1, [p.text for p in found]
    assert found[0].line_no == 2
    assert found[0].text.splitlines()[-1].startswith("sqlalchemy.exc.OperationalError")


def test_the_heartbeat_race_is_accounted_for_only_in_the_servers_log(tmp_path: Path):
    (tmp_path / "prefect-server.log").write_text(HEARTBEAT_RACE)
    (tmp_path / "prefect-worker.log").write_text(HEARTBEAT_RACE)
    left = unexpected_problems(tmp_path, [SQLITE_HEARTBEAT_RACE])
    assert [p.log for p in left] == ["prefect-worker.log"]


def test_the_heartbeat_entry_does_not_hide_another_database_error(tmp_path: Path):
    other = HEARTBEAT_RACE.replace("Worker channel heartbeat persistence failed", "Failed to read flow runs")
    (tmp_path / "prefect-server.log").write_text(other)
    assert len(unexpected_problems(tmp_path, [SQLITE_HEARTBEAT_RACE])) == 1


def test_an_error_after_a_traceback_is_its_own_problem(tmp_path: Path):
    log = tmp_path / "bentoml.log"
    log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad\n"
                   "12:00:00 | ERROR | worker died\n")
    assert [p.line_no for p in problems(log)] == [1, 4]
    assert unexpected_problems(tmp_path, [Expected(r"ValueError: bad", "provoked")])[0].line_no == 4


# The shape of the work-queue poll bookkeeping that ran out of retries in CI (frames shortened).
QUEUE_POLL_LOCK = """\
09:41:54.920 | ERROR   | docket.dependencies - \u21a9 [ 60138ms] mark_work_queues_ready(polled_work_queue_ids=..., \
ready_work_queue_ids=...){mark_work_queues_ready:work_pool:755a2115-df95-4ad1-a400-d4ef8b278024}
Traceback (most recent call last):
  File "sqlalchemy/dialects/sqlite/aiosqlite.py", line 195, in execute
    result = function()
sqlite3.OperationalError: database is locked

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "docket/worker.py", line 1134, in _execute
    result = await execution.function(
  File "prefect/server/models/work_queues.py", line 708, in record_work_queue_polls
    await session.execute(
sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked
"""


def test_the_queue_poll_lock_is_accounted_for_and_hides_no_other_locked_task(tmp_path: Path):
    from tests.support.logs import SQLITE_QUEUE_POLL_LOCK

    (tmp_path / "prefect-server.log").write_text(QUEUE_POLL_LOCK)
    assert unexpected_problems(tmp_path, [SQLITE_QUEUE_POLL_LOCK]) == []
    # the same lock in another background task (a flow run's state, say) is still a problem
    other = QUEUE_POLL_LOCK.replace("mark_work_queues_ready", "set_flow_run_state")
    (tmp_path / "prefect-server.log").write_text(other)
    assert len(unexpected_problems(tmp_path, [SQLITE_QUEUE_POLL_LOCK])) == 1
    # and another error of that task is not this one
    (tmp_path / "prefect-server.log").write_text(QUEUE_POLL_LOCK.replace("database is locked", "disk I/O error"))
    assert len(unexpected_problems(tmp_path, [SQLITE_QUEUE_POLL_LOCK])) == 1
