"""The project config file as ``mlcycle init`` writes it: every section from the settings model, commented.

The file is generated, never copied from a template: :func:`settings_document` dumps a ``Settings`` (the
sections init decides, and every other one at the defaults of tasks/settings/), :func:`render_config`
writes it as YAML in the style of the repository's ``mlcycle.yaml`` (block sections, small maps in flow
style, one feature per line), with that file's comments on the keys they belong to
(:func:`template_comments` reads them). A new setting or a changed default therefore shows up in the next
generated file without anyone editing a template; a key the repository's file does not comment is written
without a comment. The gate's metric comments depend on the task, so they are written for the dataset's
task instead (:func:`task_comments`).

:func:`validated` checks a document against the settings model alone (no environment, no secrets, no
file: the document is what the file will say), and :func:`write_new` writes the file only if none is there.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mlcycle.tasks.settings import ConfigError, DatasetSpec, FeatureSpec, Settings
from mlcycle.tasks.settings.naming import derived_names
from mlcycle.tasks.settings.problem import HIGHER, LOWER, METRICS, category_key

# The repository's own config: the source of the comments (absent when mlcycle runs from an installed copy).
REPOSITORY_CONFIG = Path(__file__).resolve().parents[1] / "mlcycle.yaml"
COMMENT_COLUMN = 35  # end-of-line comments start here, as in the repository's file
FLOW_WIDTH = 100  # a small map is written on one line {a: 1, b: 2} when it fits in this many characters
_KEY = re.compile(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$")


class ConfigExists(ConfigError):
    """The config file is already there: ``mlcycle init`` never overwrites one."""


@dataclass
class Comments:
    """Comment lines by key path (a tuple of keys; an item of a list by its index)."""

    header: list[str] = field(default_factory=list)  # the lines at the top of the file
    before: dict[tuple, list[str]] = field(default_factory=dict)  # lines above a key
    after: dict[tuple, list[str]] = field(default_factory=dict)  # a key's end-of-line comment, continued below

    def merged(self, other: Comments) -> Comments:
        """These comments with ``other``'s taking precedence, key by key (and its header first)."""
        return Comments(header=[*other.header, *self.header], before={**self.before, **other.before},
                        after={**self.after, **other.after})


# --------------------------------------------------------------------------------------------------
# comments of the repository's file
# --------------------------------------------------------------------------------------------------


def template_comments(path: Path = REPOSITORY_CONFIG) -> Comments:
    """The comments of a config file, by the key they stand above or beside (none when it is absent).

    A comment line starting at the column of the previous key's end-of-line comment continues that comment;
    any other comment line belongs to the next key. Items of lists (the demo's features, drift events) and
    the lines of a value wrapped over several lines carry no comments worth keeping.
    """
    comments = Comments()
    if not path.is_file():
        return comments
    lines = path.read_text().splitlines()
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        comments.header.append(_comment_text(lines[start]))
        start += 1
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    last: tuple | None = None
    last_column = -1
    depth = 0  # flow brackets still open from previous lines
    for line in lines[start:]:
        stripped = line.strip()
        if depth > 0:
            depth += _bracket_depth(line)
            continue
        if not stripped:
            continue
        if stripped.startswith("#"):
            if last is not None and line.index("#") == last_column:
                comments.after[last].append(_comment_text(stripped))
            else:
                pending.append(_comment_text(stripped))
                last = None
            continue
        match = _KEY.match(line)
        if stripped.startswith("-") or not match:
            depth, last, pending = _bracket_depth(_split_comment(line)[0]), None, []
            continue
        indent, key, rest = len(match[1]), match[2], match[3]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        path_ = tuple(k for _, k in stack)
        if pending:
            comments.before[path_], pending = pending, []
        value, comment = _split_comment(rest)
        depth = _bracket_depth(value)
        last = None
        if comment is not None:
            comments.after[path_] = [_comment_text(comment)]
            last, last_column = path_, len(line) - len(rest) + rest.index(comment)
    return comments


def task_comments(task: str) -> Comments:
    """The gate's metric comments for ``task`` (the repository's file names the binary metrics)."""
    metrics = METRICS[task]
    higher = [m for m, d in metrics.items() if d == HIGHER]
    lower = [m for m, d in metrics.items() if d == LOWER]
    return Comments(after={
        ("gate", "primary_metric"): [" | ".join(metrics)],
        ("gate", "floors"): [f"minimums of higher-is-better metrics ({', '.join(higher)})"],
        ("gate", "ceilings"): [f"maximums of lower-is-better metrics ({', '.join(lower)})"],
    })


def _comment_text(text: str) -> str:
    return text.strip()[1:].removeprefix(" ").rstrip()


def _split_comment(text: str) -> tuple[str, str | None]:
    """(value, comment starting with '#') of a line's rest; a '#' inside quotes is part of the value."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].strip(), text[i:]
    return text.strip(), None


def _bracket_depth(text: str) -> int:
    depth, quote = 0, None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
    return depth


# --------------------------------------------------------------------------------------------------
# the document: settings as plain data, in the file's order
# --------------------------------------------------------------------------------------------------


def section_names() -> list[str]:
    """The sections of ``Settings`` (the dataset first), in the model's order."""
    return [name for name, f in Settings.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)]


def settings_document(settings: Settings) -> dict[str, Any]:
    """What the config file says for ``settings``: project name, landing path (when set), every section.

    The connection settings (home, store, S3 endpoint and keys, API token) are left to the environment.
    """
    document: dict[str, Any] = {"project_name": settings.project_name}
    if settings.landing_path:
        document["landing_path"] = settings.landing_path
    for name in section_names():
        section = getattr(settings, name)
        document[name] = dataset_document(section) if name == "dataset" else _plain(section.model_dump())
    # names derived from the project stay derived (null): a renamed project renames them too
    for section, key, value in derived_names(settings.project_name):
        if document[section][key] == value:
            document[section][key] = None
    for name, family in settings.training.families.items():  # a search parameter: only what it sets
        document["training"]["families"][name]["search_space"] = {
            param: _plain(space.model_dump(exclude_defaults=True)) for param, space in family.search_space.items()}
    return document


def dataset_document(spec: DatasetSpec) -> dict[str, Any]:
    """The dataset declaration with category values as YAML numbers or booleans where they are ones."""
    out: dict[str, Any] = {"name": spec.name, "task": spec.task, "id_column": spec.id_column,
                           "timestamp_column": spec.timestamp_column, "target": spec.target}
    if spec.task == "binary":
        out["positive_label"] = category_value(spec.positive_label)
    if spec.classes is not None:  # binary: only when declared (the default is 0, 1)
        out["classes"] = [category_value(c) for c in spec.classes]
    if spec.task == "regression":
        out.update({k: _number(getattr(spec, k)) for k in ("target_min", "target_max") if getattr(spec, k) is not None})
    out["min_rows_per_batch"] = spec.min_rows_per_batch
    out["max_rows_per_batch"] = spec.max_rows_per_batch
    out["features"] = [feature_document(f) for f in spec.features]
    return out


def feature_document(feature: FeatureSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": feature.name, "kind": feature.kind}
    if feature.kind == "numeric":
        out["dtype"] = feature.dtype
        out.update({k: _number(getattr(feature, k)) for k in ("min", "max") if getattr(feature, k) is not None})
    else:
        out["categories"] = [category_value(c) for c in feature.categories or []]
    out["nullable"] = feature.nullable
    if feature.critical:
        out["critical"] = True
    if feature.description:
        out["description"] = feature.description
    return out


def category_value(text: str) -> Any:
    """A canonical category text as YAML would best write it: ``"1"`` -> 1, ``"true"`` -> true, ``"a"`` -> "a".

    A text becomes a number or boolean only when that value's canonical text is the text itself (``"01"``
    and ``"1e3"`` stay texts), so loading the file gives back exactly the same categories.
    """
    if text in ("true", "false"):
        return text == "true"
    try:
        number: Any = int(text) if re.fullmatch(r"-?\d+", text) else float(text)
        return number if category_key(number) == text else text
    except ValueError:
        return text


def _number(value: float) -> float | int:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _plain(value: Any) -> Any:
    """A model dump as YAML-safe plain data (paths as text; dates stay dates, which YAML writes bare)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def validated(document: dict[str, Any]) -> Settings:
    """``document`` checked by the settings model alone: no environment variable, secret or file counts."""
    try:
        return _DocumentOnly(**document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                             for err in exc.errors())
        raise ConfigError(f"the generated configuration is invalid: {problems}") from None


class _DocumentOnly(Settings):
    """Settings from keyword arguments only: what a config file would hold, without what surrounds it."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **others):
        return (init_settings,)


# --------------------------------------------------------------------------------------------------
# rendering and writing
# --------------------------------------------------------------------------------------------------


def render_config(document: dict[str, Any], comments: Comments) -> str:
    """``document`` as YAML text with ``comments``: top-level keys apart, sections as blocks, small maps inline."""
    out = [f"# {line}".rstrip() for line in comments.header]
    for key, value in document.items():
        out.append("")
        _emit(out, key, value, (key,), 0, comments)
    return "\n".join(out).lstrip("\n") + "\n"


def _emit(out: list[str], key: str, value: Any, path: tuple, indent: int, comments: Comments) -> None:
    pad = " " * indent
    out.extend(f"{pad}# {line}".rstrip() for line in comments.before.get(path, []))
    after = comments.after.get(path, [])
    if isinstance(value, dict) and value and _as_block(key, value, path, indent, comments):
        _line(out, f"{pad}{key}:", after)
        for k, v in value.items():
            _emit(out, k, v, (*path, k), indent + 2, comments)
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        _line(out, f"{pad}{key}:", after)
        for i, item in enumerate(value):
            out.extend(f"{pad}  # {line}".rstrip() for line in comments.before.get((*path, i), []))
            out.append(f"{pad}  - {_flow(item)}")
    else:
        _line(out, f"{pad}{key}: {_flow(value)}", after)


def _as_block(key: str, value: dict, path: tuple, indent: int, comments: Comments) -> bool:
    """Sections, maps of maps, maps whose keys are commented, and long maps are blocks; the rest one line."""
    return (indent == 0 or any(isinstance(v, dict) for v in value.values())
            or any((*path, k) in comments.after or (*path, k) in comments.before for k in value)
            or indent + len(key) + 2 + len(_flow(value)) > FLOW_WIDTH)


def _line(out: list[str], text: str, after: list[str]) -> None:
    if not after:
        out.append(text)
        return
    column = max(COMMENT_COLUMN, len(text) + 2)
    out.append(f"{text.ljust(column)}# {after[0]}".rstrip())
    out.extend(f"{' ' * column}# {line}".rstrip() for line in after[1:])


def _flow(value: Any) -> str:
    """One value in YAML flow style (quoted where flow style needs it), on one line."""
    text = yaml.safe_dump([value], default_flow_style=True, sort_keys=False, allow_unicode=True, width=10**9)
    return text.strip()[1:-1]


def write_new(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` only if nothing is there (atomic: a complete file or none).

    The text goes to a temporary file beside it, then a hard link gives it its name, which fails if the
    name is taken: a file created meanwhile is never overwritten.
    """
    path = Path(path)
    if path.exists():
        raise ConfigExists(f"{path} already exists; mlcycle init never overwrites a config: move it away, or set "
                           "MLCYCLE_CONFIG to a new file")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(text)
    try:
        os.link(tmp.name, path)
    except FileExistsError:
        raise ConfigExists(f"{path} already exists; mlcycle init never overwrites a config") from None
    finally:
        os.unlink(tmp.name)

