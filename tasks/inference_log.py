"""The inference log's writer: every prediction the service makes, as Parquet parts in the object store.

Layout::

    inference/date=YYYY-MM-DD/part-<utc timestamp>-<uuid>.parquet    predictions (the monitoring input)
    labels/date=YYYY-MM-DD/part-<utc timestamp>-<uuid>.parquet       outcomes that arrived later

One row per predicted record: ``request_id``, ``row`` (position in the request), ``ts`` (UTC),
``endpoint``, ``model``, ``model_version``, the dataset's id column (when the client sent it), every
feature the model read, the task's predictions (:data:`PREDICTION_COLUMNS`; multiclass ``probabilities``
is a list column) and ``traffic``: ``canary`` when the request said so in the :data:`TRAFFIC_HEADER`
header (test-serving's and the rollout's checks), else ``live``. Nothing else: no other header, no
settings, no secrets. Labels join on (``request_id``, ``row``), or on the id column. The part-key layout
is here (:func:`part_key`, also used for labels parts); the reading side, which only the monitor and the
CLI need, is ``tasks/inference_reader.py``: the bento ships this module, not that one.

The writer (:class:`InferenceLogWriter`) keeps logging off the request path:

* ``submit`` appends to a bounded in-memory queue (``queue_rows``) and never blocks: when the queue is
  full the predictions are **dropped and counted** (``dropped_rows``/``dropped_requests``, a warning
  at most once a minute), the request itself is answered normally;
* a background thread writes a part every ``flush_rows`` rows or ``flush_interval_seconds``, whichever
  comes first, one part per UTC date, each an atomic put (a reader sees whole parts only);
* a failed upload is retried (``upload_attempts``, exponential backoff); if the store stays down the
  part is **spilled** to a local folder (atomic rename) and re-uploaded, oldest first, once the store
  answers again (also by the next process that starts with the same spill folder);
* ``close()`` (the service's shutdown hook) writes everything still queued: a normal stop loses no
  record (it is in the store, or spilled on local disk if the store is down).
* before ``submit`` returns (so before the request is answered) the entry is appended to the writer's
  **journal** under the spill folder (tasks/inference_journal.py); a worker killed between two flushes
  loses no answered request: the backend's other worker, or its replacement, replays the dead one's
  journal into the same part keys (``serving.inference_log.journal``, on by default).

Pure Python + pyarrow; no Prefect, no BentoML (the service imports it).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mlcycle.tasks.inference_journal import JOURNAL_DIR, Journal, JournalCorrupt, Segment, encode, read_records
from mlcycle.tasks.inference_rows import (
    LogEntry,
    RowLayout,
    by_date,
    parquet_rows,
    table_bytes,
)
from mlcycle.tasks.schema import InferenceLogStatus
from mlcycle.tasks.settings import FeatureSpec
from mlcycle.tasks.storage import ObjectStore, StoreError, UnsafeKey, check_key

INFERENCE_PREFIX = "inference"
LABELS_PREFIX = "labels"
# Who sent a request: the client says so in this header; canary and test-serving traffic is "canary", and
# only "live" rows are counted in a monitoring window or joined with labels.
TRAFFIC_HEADER = "X-Mlcycle-Traffic"
LIVE, CANARY = "live", "canary"
TRAFFIC_VALUES = (LIVE, CANARY)

logger = logging.getLogger("mlcycle.inference_log")


def part_key(prefix: str, day: dt.date, now: dt.datetime | None = None, unique: str | None = None) -> str:
    """``<prefix>/date=YYYY-MM-DD/part-<UTC timestamp>-<uuid>.parquet``: unique, sortable by time.
    ``unique`` (a journal segment's name, itself a timestamp first) replaces both: the same key when the
    segment is written again after a crash."""
    if unique is not None:
        return f"{prefix}/date={day.isoformat()}/part-{unique}.parquet"
    now = now or dt.datetime.now(dt.UTC)
    return f"{prefix}/date={day.isoformat()}/part-{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}.parquet"


class InferenceLogWriter:
    """A bounded queue and one background thread writing Parquet parts (see the module docstring).

    ``on_event(name, amount)`` is called for ``written_rows``, ``dropped_rows``, ``failed_uploads``
    and ``spilled_parts`` (the service turns them into Prometheus counters).
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        model: str,
        model_version: int,
        features: list[FeatureSpec],
        id_column: str,
        spill_dir: Path,
        task: str = "binary",
        queue_rows: int = 100_000,
        flush_rows: int = 5_000,
        flush_interval_seconds: float = 5.0,
        upload_attempts: int = 3,
        retry_delay_seconds: float = 0.5,
        journal: bool = True,
        on_event: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.layout = RowLayout(model=model, model_version=model_version, task=task, id_column=id_column,
                                features=tuple(features))
        self.task, self.prediction_columns = task, self.layout.prediction_columns
        self.spill_dir = Path(spill_dir)
        self.queue_rows, self.flush_rows = queue_rows, flush_rows
        self.flush_interval = flush_interval_seconds
        self.upload_attempts, self.retry_delay = max(1, upload_attempts), retry_delay_seconds
        self.on_event = on_event
        self._queue: deque[LogEntry] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._flush_requested = 0
        self._flushed = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self._store_down_until = 0.0
        self._last_drop_warning = 0.0
        self._skipped_spills: set[str] = set()
        self.counters = {"written_rows": 0, "written_parts": 0, "dropped_rows": 0, "dropped_requests": 0,
                         "failed_uploads": 0, "spilled_parts": 0, "reuploaded_parts": 0, "recovered_rows": 0}
        self.last_error: str | None = None
        self._journal = Journal(self.spill_dir / JOURNAL_DIR, self.layout.header()) if journal else None

    # -- the request path -------------------------------------------------------------------------

    def submit(self, request_id: str, endpoint: str, columns: dict[str, np.ndarray], ids: list[str | None] | None,
               predictions: dict[str, np.ndarray], *, traffic: str = LIVE, ts: dt.datetime | None = None) -> bool:
        """Queue one request's predictions (``PREDICTION_COLUMNS[task]``: tasks.predictions.prediction_columns);
        never blocks. False (and counted) when the queue is full."""
        if list(predictions) != self.prediction_columns or traffic not in TRAFFIC_VALUES:
            raise ValueError(f"a {self.task} prediction is logged as {self.prediction_columns}, traffic "
                             f"{TRAFFIC_VALUES}; got {list(predictions)}, {traffic!r}")
        entry = LogEntry(request_id, endpoint, ts or dt.datetime.now(dt.UTC), columns, ids, predictions, traffic)
        n = entry.rows
        record = encode(entry) if self._journal is not None else None
        with self._cond:
            if self._stop or self._queued_rows + n > self.queue_rows:
                self.counters["dropped_rows"] += n
                self.counters["dropped_requests"] += 1
                warn = time.monotonic() - self._last_drop_warning > 60
                if warn:
                    self._last_drop_warning = time.monotonic()
            else:
                if record is not None:
                    self._journal_append(record)
                self._queue.append(entry)
                self._queued_rows += n
                if self._queued_rows >= self.flush_rows:
                    self._cond.notify()
                return True
        self._emit("dropped_rows", n)
        if warn:
            logger.warning("inference log queue full (%d rows queued, limit %d): %d predictions of request %s not "
                           "logged (%d dropped so far)", self._queued_rows, self.queue_rows, n, request_id,
                           self.counters["dropped_rows"])
        return False

    def _journal_append(self, record: bytes) -> None:
        """Write-ahead (tasks/inference_journal.py): on disk before the request is answered. A journal that
        cannot be written (disk full) leaves the entry in memory only, said once a minute."""
        try:
            self._journal.append(record)
        except OSError as exc:
            self.last_error = f"journal: {exc}"
            if time.monotonic() - self._last_drop_warning > 60:
                self._last_drop_warning = time.monotonic()
                logger.warning("inference log journal not written (%s): predictions kept in memory only", exc)

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> InferenceLogWriter:
        self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
        self._thread.start()
        return self

    def flush(self, timeout: float = 30.0) -> None:
        """Write everything queued now (spilling if the store is down) and wait for it."""
        if self._thread is None:
            self._drain()
            return
        with self._cond:
            self._flush_requested += 1
            ticket = self._flush_requested
            self._cond.notify()
            self._cond.wait_for(lambda: self._flushed >= ticket or self._thread is None
                                or not self._thread.is_alive(), timeout)

    def close(self, timeout: float = 30.0) -> InferenceLogStatus:
        """Stop accepting, write what is queued, join the thread. Safe to call twice."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        else:  # never started: write synchronously
            self._drain(final=True)
        if self._journal is not None:
            self._journal.close()
        return self.status()

    def status(self) -> InferenceLogStatus:
        return InferenceLogStatus(enabled=True, queued_rows=self._queued_rows, last_error=self.last_error,
                                  **self.counters)

    # -- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        deadline = time.monotonic() + self.flush_interval
        self._recover_orphans()
        self._reupload_spilled()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or self._queued_rows >= self.flush_rows
                                    or self._flush_requested > self._flushed,
                                    max(0.0, deadline - time.monotonic()))
                stopping, ticket = self._stop, self._flush_requested
            if time.monotonic() >= deadline or stopping or ticket > self._flushed or \
                    self._queued_rows >= self.flush_rows:
                try:
                    self._drain(final=stopping)
                except Exception as exc:  # noqa: BLE001 - the writer must survive anything
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    logger.exception("inference log writer failed")
                deadline = time.monotonic() + self.flush_interval
                with self._cond:
                    self._flushed = ticket
                    self._cond.notify_all()
            if stopping:
                return

    def _take(self) -> tuple[list[LogEntry], Segment | None]:
        """The queue, and the journal segment holding exactly those entries."""
        with self._cond:
            entries = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
            segment = self._journal.rotate() if self._journal is not None else None
        return entries, segment

    def _drain(self, final: bool = False) -> None:
        entries, segment = self._take()
        written = False
        try:
            self._write_entries(self.layout, entries, segment.part_unique if segment else None, final)
            written = True
        finally:
            if segment is not None:
                self._journal.done(segment, written=written)
        self._recover_orphans()
        self._reupload_spilled()

    def _write_entries(self, layout: RowLayout, entries: list[LogEntry], unique: str | None, final: bool) -> None:
        """One part per UTC date (in the store, or spilled), as rows of ``layout`` (the writer they were for)."""
        for day, group in by_date(entries).items():
            self._write_part(part_key(INFERENCE_PREFIX, day, unique=unique), table_bytes(layout.table(group)),
                             final=final)

    def _recover_orphans(self) -> None:
        """Replay the journal segments of dead writers sharing the spill folder (their answered requests)."""
        if self._journal is None:
            return
        for segment in self._journal.orphans():
            try:
                header, entries, _torn = read_records(segment.read())
                layout = self.layout if header is None else RowLayout.from_header(header)
            except (JournalCorrupt, ValueError) as exc:
                logger.warning("inference log: journal %s cannot be replayed (%s); moved to %s", segment.path, exc,
                               segment.quarantine())
                continue
            try:
                self._write_entries(layout, entries, segment.part_unique, final=False)
            except Exception:
                segment.release()
                raise
            segment.discard()
            rows = sum(e.rows for e in entries)
            self.counters["recovered_rows"] += rows
            if rows:
                logger.warning("inference log: %d predictions of %d requests answered by a worker that died were "
                               "replayed from its journal %s", rows, len(entries), segment.path.name)


    def _write_part(self, key: str, data: bytes, final: bool) -> None:
        rows = parquet_rows(data)
        store_down = time.monotonic() < self._store_down_until
        if final and store_down:  # stopping while the store is down: keep it on disk, do not wait for timeouts
            self._spill(key, data)
            return
        attempts = 1 if final or store_down else self.upload_attempts
        for attempt in range(attempts):
            try:
                self.store.put_bytes(key, data)
                self.counters["written_parts"] += 1
                self.counters["written_rows"] += rows
                self._emit("written_rows", rows)
                self._store_down_until = 0.0
                return
            except StoreError as exc:
                self.counters["failed_uploads"] += 1
                self._emit("failed_uploads", 1)
                self.last_error = str(exc)
                if attempt + 1 < attempts:
                    time.sleep(self.retry_delay * 2 ** attempt)
        self._store_down_until = time.monotonic() + max(self.flush_interval, 5.0)
        self._spill(key, data)
        logger.warning("inference log: %s unavailable (%s); %d predictions kept in %s until it answers again",
                       self.store.description, self.last_error, rows, self.spill_dir)

    def _spill(self, key: str, data: bytes) -> None:
        path = self.spill_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self.counters["spilled_parts"] += 1
        self._emit("spilled_parts", 1)

    def _reupload_spilled(self) -> None:
        """Upload spilled parts, oldest first; stop at the first failure (the store is still down)."""
        if not self.spill_dir.is_dir() or time.monotonic() < self._store_down_until:
            return
        for path in sorted(self.spill_dir.rglob("part-*.parquet")):
            key = path.relative_to(self.spill_dir).as_posix()
            try:
                check_key(key)
            except UnsafeKey as exc:  # not a part this writer spilled: leave it, never block the others on it
                if key not in self._skipped_spills:
                    self._skipped_spills.add(key)
                    logger.warning("inference log: not uploading %s from the spill folder: %s", path, exc)
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # another worker took it
                continue
            try:
                self.store.put_bytes(key, data)
            except StoreError as exc:
                self.last_error = str(exc)
                self._store_down_until = time.monotonic() + max(self.flush_interval, 5.0)
                return
            path.unlink(missing_ok=True)
            rows = parquet_rows(data)
            self.counters["reuploaded_parts"] += 1
            self.counters["written_parts"] += 1
            self.counters["written_rows"] += rows
            self._emit("written_rows", rows)

    def _emit(self, name: str, amount: int) -> None:
        if self.on_event is not None:
            try:
                self.on_event(name, amount)
            except Exception:  # noqa: BLE001 - metrics must never break logging
                logger.debug("inference log metrics callback failed", exc_info=True)


def open_writer(settings, served, on_event: Callable[[str, int], None] | None = None) -> InferenceLogWriter | None:
    """The started writer for a served model (tasks.schema.ServedModel), or None when the log is disabled."""
    from mlcycle.tasks.storage import open_store

    config = settings.serving.inference_log
    if not config.enabled:
        return None
    return InferenceLogWriter(
        open_store(settings), model=served.name, model_version=served.version, features=served.feature_specs(),
        id_column=served.dataset.id_column, spill_dir=config.spill_dir or settings.home / "inference-spill",
        task=served.task,
        queue_rows=config.queue_rows, flush_rows=config.flush_rows,
        flush_interval_seconds=config.flush_interval_seconds, upload_attempts=config.upload_attempts,
        journal=config.journal, on_event=on_event,
    ).start()


