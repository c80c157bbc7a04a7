"""Where a flow's heavy fan-out runs: in the flow's process (default) or on a Dask cluster.

``dask.address`` (mlcycle.yaml, env ``MLCYCLE_DASK__ADDRESS``) is the one switch:

* unset (the default): flows keep Prefect's default thread-pool task runner and nothing imports Dask;
* set: :func:`dask_task_runner` first checks that the scheduler answers and has a worker, within
  ``dask.connect_timeout_seconds`` (else :class:`DaskUnavailable`, naming the address: never a hang),
  then returns a ``prefect_dask.DaskTaskRunner`` connected to it. A flow runs its fan-out as a subflow
  with that runner (``subflow.with_options(task_runner=runner)``): the backfill's per-date tasks
  (``flows/ingest.py``) and the monitor's per-feature drift (``flows/monitor.py``). The training search
  reaches the same cluster through joblib (``training.dask_scheduler`` defaults to ``dask.address``),
  connected by the same :func:`dask_client` within the same timeout.

What crosses the wire is small: tasks take the settings and references (a ``PartitionRef``, a
``MonitorWindow``, a feature name) and read their data from the object store on the worker. So the
workers need the mlcycle checkout importable with the same pinned dependencies, a route to the Prefect
API (each task carries the flow's Prefect settings), and the same object store: MinIO/S3, or the local
store's folder at the same absolute path (:func:`settings_for_workers`). The tasks are the same functions
on the same bytes, so results equal the in-process run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client
    from prefect.task_runners import TaskRunner

    from mlcycle.tasks.settings import Settings

ADDRESS_KEY = "dask.address (MLCYCLE_DASK__ADDRESS)"


class DaskUnavailable(RuntimeError):
    """The configured Dask scheduler cannot be used; the message names its address and the setting."""


@contextmanager
def dask_client(address: str, timeout_seconds: float, *, setting: str = ADDRESS_KEY,
                as_default: bool = False) -> Iterator[Client]:
    """A client connected to the scheduler at ``address`` within ``timeout_seconds``, closed on exit.

    The one way mlcycle connects to Dask (the flows' fan-out and the training search). A refused or silent
    address raises :class:`DaskUnavailable` naming the address and ``setting``, the configuration key it
    came from. ``as_default`` makes it the process's default client (where joblib's Dask backend sends work).
    """
    from distributed import Client

    try:
        client = Client(address, timeout=timeout_seconds, set_as_default=as_default)
    except Exception as exc:  # refused, timed out, a malformed address, or something else answering there
        raise DaskUnavailable(f"cannot reach the Dask scheduler at {address} within {timeout_seconds:g} s "
                              f"(set by {setting}): {type(exc).__name__}: {exc}") from None
    try:
        yield client
    finally:
        client.close()


def check_scheduler(address: str, timeout_seconds: float) -> int:
    """Connect to the scheduler at ``address`` and wait for a worker, both within ``timeout_seconds``.

    Returns the number of workers. A refused or silent address, or a scheduler without workers (which
    would leave every submitted task pending forever), raises :class:`DaskUnavailable`.
    """
    with dask_client(address, timeout_seconds) as client:
        try:
            client.wait_for_workers(1, timeout=timeout_seconds)
        except (OSError, TimeoutError) as exc:
            raise DaskUnavailable(f"the Dask scheduler at {address} has no worker after {timeout_seconds:g} s "
                                  f"(set by {ADDRESS_KEY}): {exc}") from None
        return len(client.scheduler_info().get("workers", {}))


def dask_task_runner(settings: Settings) -> TaskRunner | None:
    """The task runner for a flow's fan-out: None without ``dask.address``, else a checked DaskTaskRunner."""
    address = settings.dask.address
    if not address:
        return None
    timeout = settings.dask.connect_timeout_seconds
    check_scheduler(address, timeout)
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address, client_kwargs={"timeout": timeout})


def settings_for_workers(settings: Settings) -> Settings:
    """The settings as shipped to Dask workers: a relative ``home`` (the local store) made absolute.

    A worker's working directory is its own; the flow's relative ``.mlcycle`` would name another folder.
    """
    if settings.home.is_absolute():
        return settings
    return settings.model_copy(update={"home": settings.home.resolve()})
