"""The guard for what runs unattended: service logs hold no traceback and no ERROR the test did not provoke.

A scheduler that crashes at every loop, a worker that cannot submit a run, a `bentoml serve` worker that
dies and is restarted: each of these writes to its service log and nothing else notices. After a test drives
a stack, :func:`unexpected_problems` reads every log under the stack's ``run/`` folder and returns each
traceback or error line that no pattern of the test's explicit ``expected`` list accounts for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# A line that reports a problem: Python tracebacks, Prefect/uvicorn/BentoML "ERROR" levels, nginx [error]/[crit]/
# [alert]/[emerg] (its [warn] and [notice] lines are routine: "buffered to a temporary file" and the like).
PROBLEM = re.compile(r"Traceback \(most recent call last\)|\bERROR\b|\bCRITICAL\b|\[(error|crit|alert|emerg)\]")


@dataclass(frozen=True)
class Expected:
    """A problem the test provokes on purpose: ``pattern`` must match the problem's line or the block after it."""

    pattern: str
    why: str
    log: str = "*"  # glob of the log file names it may appear in


@dataclass(frozen=True)
class Problem:
    log: str
    line_no: int
    text: str  # the problem line and the lines that follow it (the traceback's body)

    def __str__(self) -> str:
        return f"{self.log}:{self.line_no}: {self.text}"


def problems(path: Path) -> list[Problem]:
    """Every problem of one log: the problem line, and when a traceback starts on it or right after it, the
    whole traceback through its final exception line (chained ones included), where the error is named."""
    lines = path.read_text(errors="replace").splitlines()
    found, i = [], 0
    while i < len(lines):
        if not PROBLEM.search(lines[i]):
            i += 1
            continue
        end = _block_end(lines, i)
        found.append(Problem(path.name, i + 1, "\n".join(lines[i:end])))
        i = end
    return found


_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


def _block_end(lines: list[str], i: int) -> int:
    """One past the last line of the problem starting at ``i``."""
    tb = i if "Traceback (most recent call last)" in lines[i] else i + 1
    if tb >= len(lines) or "Traceback (most recent call last)" not in lines[tb]:
        return i + 1
    k = tb + 1
    while k < len(lines):
        line = lines[k]
        if line.startswith((" ", "\t")) or not line.strip() or line.startswith("Traceback (most recent call last)"):
            k += 1  # a frame, a blank line, or the header of a chained traceback (after its marker)
            continue
        # ``line`` names the exception; a chained traceback may follow after a blank line and a marker
        after = k + 1
        while after < len(lines) and not lines[after].strip():
            after += 1
        if after < len(lines) and lines[after].startswith(_CHAINED):
            k = after + 1
            continue
        return k + 1
    return k


def unexpected_problems(run_dir: Path, expected: list[Expected]) -> list[Problem]:
    """The problems of every ``*.log`` under ``run_dir`` that no ``expected`` entry accounts for."""
    logs = sorted(p for p in Path(run_dir).rglob("*.log") if p.is_file())
    assert logs, f"no service logs under {run_dir}: the guard would prove nothing"
    left = []
    for path in logs:
        for problem in problems(path):
            allowed = [e for e in expected if Path(path.name).match(e.log) and re.search(e.pattern, problem.text)]
            if not allowed:
                left.append(problem)
    return left


# Prefect 3.8's server persists a worker-channel heartbeat in a deferred SQLite transaction (read the work
# pool, then write the worker row): when another writer commits in between, SQLite refuses the upgrade at
# once (SQLITE_BUSY_SNAPSHOT, busy_timeout does not apply) and the server logs the traceback, closes the
# channel with the retryable reason ``heartbeat_persistence_failed``, and the worker reconnects. It is only
# accounted for together with :func:`assert_workers_online`, which proves the worker did come back.
SQLITE_HEARTBEAT_RACE = Expected(
    r"Worker channel heartbeat persistence failed: work_pool=mlcycle-process(?s:.*)database is locked",
    "Prefect's SQLite heartbeat upgrade race: the server closes the channel as retryable, the worker reconnects",
    log="prefect-server.log")


# Prefect 3.8's server records a worker's poll of its work queues in a background (docket) task; on SQLite,
# when another connection holds the database's one write lock past the 60 s busy timeout (the machine loaded,
# a long server transaction), the task's retries run out and it logs "database is locked". Upstream:
# PrefectHQ/prefect#23051 and #18934 (SQLite only; PostgreSQL, tests/test_postgres.py, has row locks). It
# costs a poll's bookkeeping, not a run: the next poll, seconds later, records it again. It is only
# accounted for together with :func:`assert_work_queues_ready`, which proves a later poll was recorded.
SQLITE_QUEUE_POLL_LOCK = Expected(
    r"mark_work_queues_ready\((?s:.*)sqlite3\.OperationalError\) database is locked",
    "Prefect's SQLite work-queue poll bookkeeping lost the write lock; the next poll records it again",
    log="prefect-server.log")


def assert_work_queues_ready(api_url: str, work_pool: str = "mlcycle-process", within_s: float = 120.0) -> None:
    """Every queue of the work pool is READY and was polled in the last ``within_s`` seconds: a poll the
    server once failed to record cost nothing."""
    _assert_fresh(api_url, lambda client: client.read_work_queues(work_pool_name=work_pool),
                  f"the {work_pool} work pool has no work queue", "work queue", "READY", "last_polled", within_s)


def assert_workers_online(api_url: str, work_pool: str = "mlcycle-process", within_s: float = 120.0) -> None:
    """Every worker the stack started is ONLINE and heartbeated in the last ``within_s`` seconds: a heartbeat
    the server once failed to persist cost nothing."""
    _assert_fresh(api_url, lambda client: client.read_workers_for_work_pool(work_pool),
                  f"no worker ever registered with the {work_pool} work pool", "worker", "ONLINE",
                  "last_heartbeat_time", within_s)


def _assert_fresh(api_url: str, read, none_found: str, kind: str, status: str, stamp: str, within_s: float) -> None:
    """What ``read(client)`` returns is not empty, each item in ``status``, its ``stamp`` under ``within_s`` old."""
    import datetime as dt

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        items = read(client)
    assert items, none_found
    now = dt.datetime.now(dt.UTC)
    for item in items:
        assert str(item.status.value).upper() == status, f"{kind} {item.name} is {item.status}"
        seen = getattr(item, stamp)
        assert seen is not None, f"{kind} {item.name} has no {stamp}"
        age = (now - seen).total_seconds()
        assert age < within_s, f"{kind} {item.name}: {stamp} {age:.0f}s ago"
