"""The dependency audit CI runs before the tests (infra/audit.py, .ci/audit): fail on a vulnerability with
a fix, warn on one without, and never pass when the vulnerability service could not do the audit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from infra.audit import CANARY, read_report
from tests.support.env import ROOT, free_port


def report(*deps: dict, canary: bool = True) -> dict:
    flagged = [{"id": "PYSEC-2018-28", "fix_versions": ["2.20.0"], "aliases": [CANARY[2]]}] if canary else []
    return {"dependencies": [*deps, {"name": CANARY[0], "version": CANARY[1], "vulns": flagged}], "fixes": []}


def test_a_vulnerability_with_a_fix_fails_naming_package_pin_advisory_and_fix():
    verdict = read_report(report({"name": "jinja2", "version": "3.1.2", "vulns": [
        {"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"], "aliases": ["CVE-2024-22195"]}]},
        {"name": "numpy", "version": "2.4.6", "vulns": []}))
    assert verdict.exit_code() == 1 and verdict.audited == 2
    assert [f.line() for f in verdict.fixable] == [
        "jinja2==3.1.2: GHSA-h5c8-rqwp-cp95, CVE-2024-22195: fixed in 3.1.3"]


def test_a_vulnerability_without_a_fix_is_a_warning_only():
    verdict = read_report(report({"name": "pkg", "version": "1.0", "vulns": [
        {"id": "GHSA-xxxx", "fix_versions": [], "aliases": []}]}))
    assert verdict.exit_code() == 0 and verdict.fixable == []
    assert verdict.unfixed[0].line() == "pkg==1.0: GHSA-xxxx: no fixed release yet"


@pytest.mark.parametrize("case", ["skipped-package", "silent-canary"])
def test_an_incomplete_audit_never_passes(case):
    deps = [{"name": "bentoml", "skip_reason": "Dependency not found on PyPI and could not be audited"}] \
        if case == "skipped-package" else [{"name": "numpy", "version": "2.4.6", "vulns": []}]
    verdict = read_report(report(*deps, canary=case != "silent-canary"))
    assert not verdict.complete and verdict.exit_code() == 3
    assert verdict.exit_code(unavailable_ok=True) == 0  # only with AUDIT_UNAVAILABLE=warn


def test_an_unreachable_vulnerability_service_fails_loudly(tmp_path):
    """A real pip-audit run through a proxy that refuses connections: exit 3 with the reason, no pass."""
    lock = tmp_path / "requirements.lock"
    lock.write_text("numpy==2.4.6\n")
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HTTPS_PROXY": dead, "HTTP_PROXY": dead,
           "https_proxy": dead, "http_proxy": dead, "NO_PROXY": ""}
    proc = subprocess.run([sys.executable, str(ROOT / "infra" / "audit.py"), "--lock", str(lock), "--timeout", "5"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "audit: FAILED" in proc.stderr and "AUDIT_UNAVAILABLE=warn" in proc.stderr
    warned = subprocess.run([sys.executable, str(ROOT / "infra" / "audit.py"), "--lock", str(lock), "--timeout", "5"],
                            capture_output=True, text=True, timeout=300, env={**env, "AUDIT_UNAVAILABLE": "warn"})
    assert warned.returncode == 0 and "WARNING: no vulnerability service could audit" in warned.stderr
