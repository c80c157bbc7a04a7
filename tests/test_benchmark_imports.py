"""The benchmark scripts import what exists: every ``from tests... / mlcycle... import name`` in
``benchmarks/*.py`` (also the ones inside functions, which only run during a long measurement) resolves.

A refactor of the tests' helpers once left ``benchmarks/soak.py`` and ``benchmarks/rollout.py`` importing
``tests.conftest.free_port`` after it had moved: the scripts failed at their first minute, and nothing
noticed until a soak was due.
"""

from __future__ import annotations

import ast
import importlib

import pytest

from tests.support.env import ROOT

SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


def project_imports(path) -> list[tuple[str, str, int]]:
    """(module, name, line) of every ``from tests.* / mlcycle.* / benchmarks.* import name`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] in ("tests", "mlcycle", "benchmarks"):
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_every_project_name_a_benchmark_imports_exists(script):
    missing = []
    for module, name, line in project_imports(script):
        try:
            imported = importlib.import_module(module)
        except ImportError as exc:
            missing.append(f"{script.name}:{line}: {module} ({exc})")
            continue
        if not hasattr(imported, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{script.name}:{line}: {module}.{name}")
    assert not missing, "benchmark imports that no longer exist:\n" + "\n".join(missing)
