"""What a source delivers for one date: a :class:`Batch` (the frame, and where it came from).

A batch is what ``tasks/simulator.py`` and ``tasks/landing.py`` produce and ``tasks/ingest.py`` stores raw;
its description of the source (files with their sha256, what was done to the landing columns, notes) is
copied into the partition manifest (``SourceRecord`` in tasks/records/data.py). It lives apart from
``tasks/sources.py`` so that the sources module can ask the simulator which declaration it generates
without the two importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class SourceFile:
    name: str
    sha256: str
    bytes: int


@dataclass
class Batch:
    """A day's rows as the source gave them, after the landing column map (``ingest.*``) was applied.

    ``renamed`` maps landing names to declared names, ``dropped_columns`` are the extra columns dropped
    (``ingest.extra_columns: ignore``), ``generated_ids`` / ``timestamps_from_file_date`` say whether the id
    and timestamp columns were made by mlcycle rather than read (``ingest.ids`` / ``ingest.timestamps``).
    """

    frame: pd.DataFrame
    kind: str
    files: list[SourceFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    dropped_columns: list[str] = field(default_factory=list)
    generated_ids: bool = False
    timestamps_from_file_date: bool = False
