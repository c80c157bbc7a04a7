"""Where a version's code and libraries came from: the git commit of the code, and the versions of the
libraries a pickled pipeline depends on. Recorded in each version's :class:`~mlcycle.tasks.records.registry.Lineage`
(and in the serving image's labels); never a secret.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas", "pyarrow", "joblib", "prefect")
ROOT = Path(__file__).resolve().parents[2]  # the checkout: tasks/registry/lineage.py -> the repository


def environment() -> tuple[str, dict[str, str], str]:
    """Python version, versions of the libraries a pickled pipeline depends on, and the platform."""
    from importlib.metadata import PackageNotFoundError, version

    libraries = {}
    for lib in LIBRARIES:
        with suppress(PackageNotFoundError):
            libraries[lib] = version(lib)
    return sys.version.split()[0], libraries, platform.platform()


def code_version() -> tuple[str, bool | None]:
    """The git commit of the code (and whether the tree had changes), or ("unknown", None)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, timeout=5, check=True).stdout
        return commit or "unknown", bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
