"""The house rules of docs/architecture.md, checked on the code as it stands (static: nothing is run).

* every import of project code goes through the ``mlcycle`` namespace (``mlcycle.tasks``, never ``tasks``);
* no import cycle among project modules, lazy (function-level) imports included: a cycle hidden in a
  function is still two modules that cannot be understood apart;
* the layers point one way: nothing under ``tasks/`` or ``bentos/`` imports ``mlcycle.flows``, lazily or not
  (flows compose tasks; a task that reached up into a flow would drag Prefect flows into the service and tie
  the layers into one);
* no module imports a private (``_name``) name from another module, in the code or in the tests;
* no module under ``tasks/`` and ``flows/`` over 400 lines unless its docstring says why
  (``Longer than 400 lines because ...``);
* every folder holding an ``__init__.py`` is a package listed in ``pyproject.toml``;
* test modules import no other test module: shared helpers live in ``tests/support/``.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"tasks": "mlcycle.tasks", "flows": "mlcycle.flows", "bentos": "mlcycle.bentos"}
MAX_LINES = 400
LONG_REASON = "Longer than 400 lines because"


def project_files() -> dict[str, Path]:
    """Module name -> file, for every module of the three project packages."""
    modules = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def imports_of(path: Path, module: str, known: set[str]) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for each project import in ``path``, at any depth."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            for name in names:  # `from package import submodule` imports the submodule
                if f"{target}.{name}" in known:
                    found.append((f"{target}.{name}", [], node.lineno))
            found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
    return found


def test_project_code_is_imported_through_the_mlcycle_namespace():
    others = [*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "docs").glob("*.py")]
    files = {**project_files(), **{str(p): p for p in others}}
    bad = []
    for module, path in files.items():
        for target, _, line in imports_of(path, module, set()):
            if target.split(".")[0] in FOLDERS:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "import project code as mlcycle.<package>, never the bare folder name:\n" + "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    modules = project_files()
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for target, _, _ in imports_of(path, module, known):
            if target in known and target != module:
                graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_among_project_modules():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (lazy imports included):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def upward_imports(path: Path, module: str) -> list[str]:
    """``file:line imports target`` for each import of ``mlcycle.flows`` in ``path``, at any depth (lazy too)."""
    return [f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line} imports {target}"
            for target, _, line in imports_of(path, module, set())
            if target == "mlcycle.flows" or target.startswith("mlcycle.flows.")]


def test_tasks_and_bentos_never_import_the_flows_layer():
    bad = [hit for module, path in project_files().items()
           if not module.startswith("mlcycle.flows") for hit in upward_imports(path, module)]
    assert not bad, "tasks/ and bentos/ sit below flows/: move the shared name down (e.g. tasks/records/):\n" + \
        "\n".join(bad)


def test_the_upward_import_finder_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import json\n\n\ndef f():\n    from mlcycle.flows.train import train\n\n\n"
                      "def g():\n    from ...flows import demo\n    import mlcycle.flows\n")
    hits = upward_imports(source, "mlcycle.tasks.sub.probe")
    assert sorted(h.split(" imports ")[1] for h in hits) == ["mlcycle.flows", "mlcycle.flows", "mlcycle.flows.train"]


def test_no_private_name_is_imported_from_another_module():
    modules = project_files()
    sources = {**modules, **{f"tests.{p.relative_to(ROOT / 'tests').with_suffix('')}".replace("/", "."): p
                             for p in (ROOT / "tests").rglob("*.py")}}
    known = set(modules)
    bad = []
    for module, path in sources.items():
        for target, names, line in imports_of(path, module, known):
            if not target.startswith(("mlcycle.", "tests.")):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                bad.append(f"{path.relative_to(ROOT)}:{line} takes {private} from {target}")
    assert not bad, "a private name shared across modules should be public in a shared module:\n" + "\n".join(bad)


def test_no_long_module_without_a_reason():
    long = []
    for path in project_files().values():
        if path.relative_to(ROOT).parts[0] not in ("tasks", "flows"):
            continue
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and LONG_REASON not in docstring:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not long, f"split these along their concerns, or say '{LONG_REASON} ...' in the docstring:\n" + \
        "\n".join(long)


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    packages = {m for m, p in project_files().items() if p.name == "__init__.py"}
    assert packages == listed, f"missing from pyproject.toml: {sorted(packages - listed)}; " \
                               f"listed but absent: {sorted(listed - packages)}"
    for folder in FOLDERS:
        for sub in (ROOT / folder).rglob("*"):
            if sub.is_dir() and sub.name != "__pycache__" and any(sub.glob("*.py")):
                assert (sub / "__init__.py").is_file(), f"{sub.relative_to(ROOT)} holds modules but no __init__.py"


def test_test_modules_import_only_the_shared_support():
    bad = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        module = "tests." + ".".join(path.relative_to(ROOT / "tests").with_suffix("").parts)
        for target, _, line in imports_of(path, module, set()):
            if target.startswith("tests.") and not target.startswith("tests.support"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "shared test helpers belong in tests/support/ (or a conftest fixture):\n" + "\n".join(bad)
