"""Where daily batches come from: the errors and dates every source shares, and which source a run reads.

A source turns a logical date into a ``Batch`` (tasks/batch.py: a DataFrame plus a description of where it
came from, recorded in the partition manifest). Sources do no validation: a batch that is structurally
readable is ingested as it arrived and Great Expectations decides whether it is fit for training.
What a source *does* refuse, with :class:`SourceError` naming the file, is what cannot be read at all:
no data for the date, an empty file, a truncated or corrupted Parquet/CSV file.

The sources themselves live beside this module: ``tasks/simulator.py`` (the demo loan-application
stream, the one module that knows the demo dataset's columns) and ``tasks/landing.py`` (CSV or Parquet
files dropped under a local folder or ``s3://bucket/prefix``). :func:`chosen_source` says which one a
run reads, and refuses at once what cannot work (the flows, through ``tasks/ingest.py``, and the CLI call it
before any store write or flow run); ``tasks/ingest.py`` fetches from it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlcycle.tasks.settings import Settings

SOURCE_KINDS = ("simulator", "landing")


class SourceError(ValueError):
    """A batch that cannot be read at all; the message names the file or date."""


def parse_date(value: str | dt.date) -> dt.date:
    """Parse a YYYY-MM-DD logical date, with an error that says what was expected."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
            raise ValueError
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise SourceError(f"invalid date {value!r}: expected a calendar date as YYYY-MM-DD") from None


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise SourceError(f"backfill end {end} is before start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def chosen_source(settings: Settings, source: str | None = None) -> str:
    """The source a run reads: ``source`` when given, else ``ingest.source``, checked before any work.

    Refuses an unknown source, the landing zone without ``landing_path``, and the simulator for a
    declaration it does not generate (it makes only the demo dataset), naming the way out.
    """
    kind = source or settings.ingest.source
    if kind not in SOURCE_KINDS:
        raise SourceError(f"unknown source {kind!r}: expected 'simulator' or 'landing'")
    if kind == "landing" and not settings.landing_path:
        raise SourceError("source 'landing' needs MLCYCLE_LANDING_PATH (a folder or s3://bucket/prefix)")
    if kind == "simulator":
        from mlcycle.tasks.simulator import refusal  # numpy and pandas: only when the simulator is asked for

        reason = refusal(settings.dataset)
        if reason:
            raise SourceError(reason)
    return kind
