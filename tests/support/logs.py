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
        if line.startswith((" ", "\t")) or not line.strip():
            k += 1
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
