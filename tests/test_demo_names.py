"""Nothing outside the simulator knows the demo dataset: no project code names one of its columns.

The demo's column names are read from the simulator itself (the columns of the batch it generates for the
shipped declaration), never listed here, so the check follows the simulator when it changes. What is checked
is code: every string literal of ``tasks/``, ``flows/`` and ``bentos/`` (docstrings aside: they may quote an
example), and every other file shipped there (templates, the bentofile). A name counts where it stands as a
whole identifier (``"debt_ratio"``, ``f"{x}[income]"``), not inside a longer one (``s3_region``), and
variable names are not strings (a lock's ``age`` is no column).
"""

from __future__ import annotations

import ast
import datetime as dt
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIMULATOR = ROOT / "tasks" / "simulator.py"


def demo_columns() -> list[str]:
    """The columns of a batch the simulator makes for the shipped declaration (the demo dataset)."""
    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.simulator import simulate_batch

    settings = load_settings()
    return list(simulate_batch(dt.date(2026, 10, 1), settings.simulator, settings.dataset, rows=5).frame.columns)


def name_pattern(names: list[str]) -> re.Pattern:
    return re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, names)) + r")(?![A-Za-z0-9_])")


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                lines.add(first.lineno)
    return lines


def mentions(path: Path, pattern: re.Pattern) -> list[str]:
    """``file:line: text`` for each string literal (or, outside Python, each line) naming a demo column."""
    text = path.read_text(errors="replace")
    if path.suffix != ".py":
        return [f"{path}:{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    docstrings = _docstring_lines(ast.parse(text))
    return [f"{path}:{t.start[0]}: {t.string[:100]}" for t in tokenize.generate_tokens(io.StringIO(text).readline)
            if (t.type == tokenize.STRING or tokenize.tok_name[t.type] == "FSTRING_MIDDLE")
            and t.start[0] not in docstrings and pattern.search(t.string)]


def test_no_demo_column_name_outside_the_simulator():
    columns = demo_columns()
    assert len(columns) >= 5 and all(name in SIMULATOR.read_text() or name in (ROOT / "mlcycle.yaml").read_text()
                                     for name in columns)
    pattern = name_pattern(columns)
    found = []
    for folder in ("tasks", "flows", "bentos"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path != SIMULATOR and "__pycache__" not in path.parts:
                found += [m.removeprefix(f"{ROOT}/") for m in mentions(path, pattern)]
    assert not found, ("the demo dataset's column names belong to tasks/simulator.py; elsewhere take the columns "
                       "from the declaration (DatasetSpec) or from the model's stored rows:\n" + "\n".join(found))


def test_the_check_sees_a_demo_name_in_code_not_in_a_docstring_or_a_longer_name(tmp_path):
    name = demo_columns()[3]
    probe = tmp_path / "probe.py"
    probe.write_text(f'"""Docstrings may quote {name}."""\nx = frame["{name}"]\ny = "s3_{name}_x"\n'
                     f'z = f"{{x}}[{name}]"\n')
    found = mentions(probe, name_pattern([name]))
    assert [m.split(": ", 1)[0] for m in found] == [f"{probe}:2", f"{probe}:4"], found
