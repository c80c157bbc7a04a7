"""The project ``mlcycle init`` drafts from one file, and the config it writes.

:func:`init_project` reads a CSV or Parquet file with the landing zone's own reader (tasks/landing.py:
``parse_table``, so the declaration sees the types ingest will see), profiles every column
(tasks/profiling.py, where the rules for kinds, ranges, categories and the task are), chooses the id,
timestamp and target columns, and writes the config (tasks/config_file.py: every other section at its
default, with the repository's comments). Every guess is an ``InitDecision`` with its reason, printed one
per line by the CLI; the dataset section of the file carries the same reasons as comments.

* id: ``--id``, else a unique text column, or a unique integer column named like an id (``id``, ``*_id``,
  ``id_*``); else generated ids (``ingest.ids: generate``);
* time: ``--time``, else a datetime column, or a text column whose every value starts with a YYYY-MM-DD
  date and parses as ISO 8601; else the file's date (``ingest.timestamps: file_date``);
* target: ``--target``; without it init refuses, listing the candidates with the task each would give;
* names: ``dataset.name`` (and ``project_name``) from ``--name`` or the file's name, ``training.model_name``
  ``<dataset>-<target>``; ``ingest.source: landing``, and ``landing_path`` when the file sits in a
  ``date=YYYY-MM-DD`` folder (or has that in its name); no simulator drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlcycle.tasks.config_file import (
    Comments,
    ConfigExists,
    render_config,
    settings_document,
    task_comments,
    template_comments,
    validated,
    write_new,
)
from mlcycle.tasks.landing import parse_table
from mlcycle.tasks.profiling import (
    ColumnProfile,
    ProfileError,
    feature_declaration,
    profile_column,
    target_declaration,
    task_of,
)
from mlcycle.tasks.records.data import InitDecision, InitReport
from mlcycle.tasks.settings.problem import TASKS
from mlcycle.tasks.sources import SourceError

GENERATED_ID, FILE_DATE_TIME = "row_id", "timestamp"  # column names when the data has neither
ID_PATTERN = "<date>-<file sha256 prefix>-<row number>"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-._=+") or "dataset"


def _id_like(name: str) -> bool:
    lower = name.lower()
    return lower == "id" or lower.endswith("_id") or lower.startswith("id_") or name.endswith(("Id", "ID"))


def _free_name(wanted: str, taken: list[str]) -> str:
    return wanted if wanted not in taken else f"mlcycle_{wanted}"


# --------------------------------------------------------------------------------------------------
# the project
# --------------------------------------------------------------------------------------------------


@dataclass
class ProjectDraft:
    """What init decided: the config's keys it sets (everything else stays at its default) and why."""

    document: dict[str, Any]
    decisions: list[InitDecision]
    comments: Comments


def draft_project(frame: pd.DataFrame, file: Path, *, target: str | None = None, time: str | None = None,
                  id_column: str | None = None, task: str | None = None, name: str | None = None) -> ProjectDraft:
    """The declaration ``frame`` (read from ``file``) suggests, with a decision and its reason for each key."""
    columns = [str(c) for c in frame.columns]
    for flag, column in (("--target", target), ("--time", time), ("--id", id_column)):
        if column is not None and column not in columns:
            raise ProfileError(f"{flag} {column!r} is not a column of {file.name}; its columns are {columns}")
    if task is not None and task not in TASKS:
        raise ProfileError(f"--task must be one of {list(TASKS)}, got {task!r}")
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise ProfileError(f"{file.name} has a column name twice: {twice}")
    profiles = {c: profile_column(c, frame[c]) for c in columns}
    decisions = [InitDecision(subject="file", choice=f"{file.name}: {len(frame)} rows, {len(columns)} columns",
                              reason="read as ingest reads landing files")]

    time_column, time_why = _time_column(profiles, time, exclude=(target, id_column))
    id_name, id_why = _id_column(profiles, id_column, exclude=(target, time_column))
    if target is None:
        candidates = [f"{c} ({task_of(p)[0]}, {p.distinct} values)" for c, p in profiles.items()
                      if c not in (time_column, id_name) and task_of(p)[0]]
        raise ProfileError(f"give the target column with --target; candidates in {file.name}: {', '.join(candidates)}")
    if target in (time_column, id_name):
        raise ProfileError(f"--target {target!r} is also the {'timestamp' if target == time_column else 'id'} column")
    target_keys, target_decisions = target_declaration(profiles[target], task)

    dataset_name = _slug(name or file.stem)
    ids = "column" if id_name else "generate"
    timestamps = "column" if time_column else "file_date"
    id_name = id_name or _free_name(GENERATED_ID, columns)
    time_column = time_column or _free_name(FILE_DATE_TIME, columns)
    id_choice = id_name if ids == "column" else f"{id_name}, generated as {ID_PATTERN} (ingest.ids: generate)"
    time_choice = (time_column if timestamps == "column" else
                   f"{time_column}, midnight UTC of the file's date (ingest.timestamps: file_date)")
    decisions += [
        InitDecision(subject="dataset.id_column", choice=id_choice, reason=id_why),
        InitDecision(subject="dataset.timestamp_column", choice=time_choice, reason=time_why),
        InitDecision(subject="dataset.target", choice=target, reason="--target"),
        *target_decisions,
    ]
    comments = Comments(after={
        ("dataset", "id_column"): [id_choice.removeprefix(id_name).removeprefix(", ") or id_why],
        ("dataset", "timestamp_column"): [time_choice.removeprefix(time_column).removeprefix(", ") or time_why],
        ("dataset", "task"): [target_decisions[0].reason]})
    features = []
    for column, p in profiles.items():
        if column in (id_name, time_column, target):
            continue
        feature, choice, why = feature_declaration(p)
        decisions.append(InitDecision(subject=column, choice=choice, reason=why))
        if feature is not None:
            comments.before[("dataset", "features", len(features))] = [f"{column}: {why}"]
            features.append(feature)
    if not features:
        raise ProfileError(f"{file.name} has no column left to be a feature besides id, timestamp and target")

    model_name = _slug(f"{dataset_name}-{target}")
    landing = _landing_folder(file)
    decisions += [
        InitDecision(subject="dataset.name", choice=dataset_name, reason="--name" if name else "the file's name"),
        InitDecision(subject="training.model_name", choice=model_name, reason="the dataset's name and its target"),
        InitDecision(subject="ingest", choice=f"source: landing, ids: {ids}, timestamps: {timestamps}, "
                                              "extra_columns: ignore",
                     reason="your own data comes from landing files; columns the declaration does not name are "
                            "dropped and recorded in each partition's manifest"),
        InitDecision(subject="landing_path", choice=landing or "not set",
                     reason="the folder holding the date=YYYY-MM-DD folder of this file" if landing else
                            "set MLCYCLE_LANDING_PATH to the folder of your date=YYYY-MM-DD exports"),
    ]
    document: dict[str, Any] = {
        "project_name": dataset_name,
        "dataset": {"name": dataset_name, "id_column": id_name, "timestamp_column": time_column, "target": target,
                    **target_keys, "features": features},
        "ingest": {"source": "landing", "ids": ids, "timestamps": timestamps},
        "training": {"model_name": model_name},
    }
    if landing:
        document["landing_path"] = landing
    return ProjectDraft(document=document, decisions=decisions, comments=comments)


def _time_column(profiles: dict[str, ColumnProfile], given: str | None, exclude) -> tuple[str | None, str]:
    if given is not None:
        if not profiles[given].datetime:
            raise ProfileError(f"--time {given!r} holds {profiles[given].dtype} values, not dates or ISO 8601 times")
        return given, "--time"
    found = [c for c, p in profiles.items() if p.datetime and c not in exclude]
    if found:
        also = f"; also datetime: {found[1:]}" if len(found) > 1 else ""
        return found[0], f"the first datetime column{also}"
    return None, "no datetime column in the file"


def _id_column(profiles: dict[str, ColumnProfile], given: str | None, exclude) -> tuple[str | None, str]:
    if given is not None:
        p = profiles[given]
        if not p.unique:
            raise ProfileError(f"--id {given!r} is not a unique id: {p.rows - p.distinct} of its {p.rows} rows repeat "
                               "a value or are null")
        return given, "--id"
    unique = [c for c, p in profiles.items() if p.unique and c not in exclude and not p.datetime
              and (p.text or (p.numeric and p.whole and _id_like(c)))]
    if unique:
        return unique[0], ("a unique text column" if profiles[unique[0]].text else "a unique integer column named "
                           "like an id") + (f"; also unique: {unique[1:]}" if len(unique) > 1 else "")
    return None, "no unique text or id-named integer column in the file"


def _landing_folder(file: Path) -> str | None:
    """The landing path a file's location suggests: the folder above its ``date=YYYY-MM-DD`` part."""
    resolved = file.resolve()
    for parent in resolved.parents:
        if re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", parent.name):
            return str(parent.parent)
    if re.search(r"date=\d{4}-\d{2}-\d{2}", resolved.name):
        return str(resolved.parent)
    return None


def init_project(file: Path, config: Path, *, target: str | None = None, time: str | None = None,
                 id_column: str | None = None, task: str | None = None, name: str | None = None,
                 template: Path | None = None) -> InitReport:
    """Profile ``file`` and write the project config to ``config``; refuses to overwrite one.

    The document is checked by the settings model before anything is written, so a file is written only
    when it loads; ``template`` is the config whose comments the file carries (default: the repository's).
    """
    file, config = Path(file), Path(config)
    if config.exists():
        raise ConfigExists(f"{config} already exists; mlcycle init never overwrites a config: move it away, or set "
                           "MLCYCLE_CONFIG to a new file")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ProfileError(f"cannot read {file}: {exc.strerror or exc}") from None
    if not file.name.lower().endswith((".csv", ".parquet", ".pq")):
        raise ProfileError(f"{file.name}: mlcycle init reads a .csv or .parquet file")
    try:
        frame = parse_table(file.name, data)
    except SourceError as exc:
        raise ProfileError(str(exc)) from None
    draft = draft_project(frame, file, target=target, time=time, id_column=id_column, task=task, name=name)
    settings = validated(draft.document)
    comments = template_comments(*([template] if template else []))
    header = Comments(header=[f"Written by `mlcycle init --from {file.name}`: the dataset section is guessed from "
                              "that file, each", "guess commented with its reason. Check it, then `mlcycle ingest`.",
                              ""])
    text = render_config(settings_document(settings),
                         comments.merged(task_comments(settings.dataset.task)).merged(draft.comments).merged(header))
    write_new(config, text)
    return InitReport(config=str(config), source=str(file), rows=len(frame), dataset=settings.dataset.name,
                      task=settings.dataset.task, target=settings.dataset.target,
                      decisions=[*draft.decisions, InitDecision(subject="config", choice=str(config),
                                                                reason="written; every other section at its "
                                                                       "default")])

