"""Races for tests: run one function in several threads released together by a barrier."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def at_once(n: int, fn: Callable[[int], Any]) -> tuple[list[Any], list[BaseException]]:
    """Call ``fn(0) .. fn(n-1)`` in ``n`` threads that start together; (their results, the exceptions raised)."""
    barrier = threading.Barrier(n)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            result = fn(i)
        except Exception as exc:  # noqa: BLE001 - handed back to the test, which asserts on it
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(result)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors
