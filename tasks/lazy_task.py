"""Prefect's ``@task``, imported on first use: a logic module's thin wrappers cost nothing until a flow runs them.

The task modules keep their Prefect wrappers beside the logic they wrap (bottom of the module). Importing
Prefect takes about a second, and the commands that run no flow (``mlcycle models list``, ``status``,
``partitions``, ``deployments``, ``labels``) import those modules for their plain functions only; with
Prefect's own decorator each of them paid that second, which made them miss their 1.5 s budget
(``benchmarks/cli_overhead.py``). So a module takes ``task`` and ``NO_CACHE`` from here::

    from mlcycle.tasks.lazy_task import NO_CACHE, task

    @task(name="decide-trigger", cache_policy=NO_CACHE)
    def decide_trigger_task(settings, report): ...

and gets an object that builds the real ``prefect.Task`` (same options, same function) the first time it
is called or any attribute is read (``.submit``, ``.map``, ``.with_options``, ``.fn``, ``.name``), then
hands everything to it. Flows, ``retrying()`` and tests use it exactly as the task itself; it pickles by
reference to its module (a Dask worker imports the same wrapper).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any


class _NoCache:
    """Stands for ``prefect.cache_policies.NO_CACHE`` until Prefect is imported."""

    def __repr__(self) -> str:
        return "NO_CACHE"


NO_CACHE = _NoCache()
_BUILD = threading.Lock()


class LazyTask:
    """A ``prefect.Task`` built on first use from ``fn`` and the decorator's options."""

    def __init__(self, fn: Callable, options: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self._lazy_fn = fn
        self._lazy_options = options
        self._lazy_task = None

    @property
    def prefect_task(self):
        """The real Prefect task (built once, thread-safe)."""
        if self._lazy_task is None:
            with _BUILD:
                if self._lazy_task is None:
                    from prefect import task as prefect_task
                    from prefect.cache_policies import NO_CACHE as PREFECT_NO_CACHE

                    options = {k: PREFECT_NO_CACHE if v is NO_CACHE else v for k, v in self._lazy_options.items()}
                    self._lazy_task = prefect_task(**options)(self._lazy_fn)
        return self._lazy_task

    def __call__(self, *args, **kwargs):
        return self.prefect_task(*args, **kwargs)

    def __getattr__(self, name: str):
        # only the task's own attributes are handed on: not this object's (missing while it is being copied or
        # unpickled, and a lookup of them here would recurse), nor special names
        if name.startswith("_lazy_") or name == "prefect_task" or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(self.prefect_task, name)

    def __reduce__(self):
        """Pickled by reference, as a module-level function is: the other side (a Dask worker) imports the
        same wrapper from the same module."""
        return _module_attribute, (self.__module__, self.__qualname__)

    def __repr__(self) -> str:
        return f"LazyTask({self._lazy_options.get('name', self._lazy_fn.__name__)!r})"


def _module_attribute(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


def task(**options: Any) -> Callable[[Callable], LazyTask]:
    """``@task(name=..., cache_policy=NO_CACHE, ...)``: Prefect's decorator, applied on first use."""

    def decorate(fn: Callable) -> LazyTask:
        return LazyTask(fn, options)

    return decorate
