"""The one retry policy of the flows: transient object-store faults only, exponential backoff, per stage.

A flow wraps each task that touches the store with its own stage's policy (``retries:`` in mlcycle.yaml,
one ``{retries: N, delay_seconds: S}`` per stage), so one stage's settings never drive another's::

    window = retrying(select_window_task, settings.retries.training)(settings, days, end)

Only :class:`~mlcycle.tasks.storage.base.StoreUnavailable` is retried (an unreachable endpoint, a
timeout, a 5xx, a read-only or full disk): a bad batch, rejected credentials or a conflict fail at once,
with a message naming the problem. The waits double from ``S``: S, 2S, 4S, ... Because every write is
idempotent and manifest-last, a retried task converges to the store a run without the fault leaves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlcycle.tasks.storage import StoreUnavailable

if TYPE_CHECKING:
    from prefect import Task

    from mlcycle.tasks.settings import RetryPolicy


def retry_on_transient(task_, task_run, state) -> bool:
    """Retry a task only when it failed on a transient store fault."""
    return isinstance(state.result(raise_on_failure=False), StoreUnavailable)


def retrying(task_obj: Task, policy: RetryPolicy) -> Task:
    """``task_obj`` with ``policy``: up to ``policy.retries`` retries of a transient store fault, the waits
    doubling from ``policy.delay_seconds``."""
    from prefect.tasks import exponential_backoff

    retries = policy.retries
    delays = exponential_backoff(backoff_factor=policy.delay_seconds)(retries) if retries else 0
    return task_obj.with_options(retries=retries, retry_delay_seconds=delays,
                                 retry_condition_fn=retry_on_transient)
