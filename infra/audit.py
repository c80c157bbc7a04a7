"""Audit requirements.lock for known vulnerabilities (pip-audit); CI runs it before the tests (.ci/audit).

Verdict:

* exit 0 -- every pinned package was audited; vulnerabilities without a fixed release are listed as
  warnings (nothing to upgrade to yet);
* exit 1 -- at least one vulnerability has a fixed release: each is listed as package, pinned version,
  advisory id and the versions that fix it;
* exit 3 -- the audit could not be done: pip-audit failed (the vulnerability service is unreachable), a
  package could not be looked up, or the canary -- a pin with a well-known advisory
  (``requests==2.19.0``, CVE-2018-18074) audited in the same run -- was not reported, which means the
  service answers without data. Never a silent pass. ``AUDIT_UNAVAILABLE=warn`` turns this case (only
  this one) into a loud warning and exit 0, for runners without access to any vulnerability service.

    .venv/bin/python infra/audit.py [--lock requirements.lock] [--service pypi|osv] [--timeout 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANARY = ("requests", "2.19.0", "CVE-2018-18074")  # fixed in 2.20.0; in every vulnerability database


@dataclass
class Finding:
    package: str
    version: str
    advisory: str
    fix_versions: list[str]
    aliases: list[str] = field(default_factory=list)

    def line(self) -> str:
        names = ", ".join([self.advisory, *self.aliases])
        fix = f"fixed in {', '.join(self.fix_versions)}" if self.fix_versions else "no fixed release yet"
        return f"{self.package}=={self.version}: {names}: {fix}"


@dataclass
class Verdict:
    fixable: list[Finding]
    unfixed: list[Finding]
    unaudited: list[str]  # "package==version: reason"
    canary_seen: bool
    audited: int

    @property
    def complete(self) -> bool:
        return not self.unaudited and self.canary_seen

    def exit_code(self, unavailable_ok: bool = False) -> int:
        if self.fixable:
            return 1
        if not self.complete:
            return 0 if unavailable_ok else 3
        return 0


def read_report(report: dict) -> Verdict:
    """Classify pip-audit's JSON report (``--format json``); the canary package is reported separately."""
    fixable, unfixed, unaudited, audited, canary_seen = [], [], [], 0, False
    for dep in report.get("dependencies", []):
        name, version = dep.get("name", "?"), dep.get("version", "?")
        if "skip_reason" in dep:
            unaudited.append(f"{name}: {dep['skip_reason']}")
            continue
        vulns = dep.get("vulns", [])
        if (name, version) == CANARY[:2]:
            canary_seen = any(CANARY[2] in [v.get("id"), *v.get("aliases", [])] for v in vulns)
            continue
        audited += 1
        for v in vulns:
            finding = Finding(name, version, v.get("id", "?"), list(v.get("fix_versions") or []),
                              list(v.get("aliases") or []))
            (fixable if finding.fix_versions else unfixed).append(finding)
    return Verdict(fixable, unfixed, unaudited, canary_seen, audited)


def run_pip_audit(lock: Path, service: str, timeout: float) -> tuple[dict | None, str]:
    """pip-audit over the lock plus the canary pin: (its JSON report or None, what it printed on failure)."""
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        pins = [ln for ln in lock.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        pins = [ln for ln in pins if not ln.lower().startswith(f"{CANARY[0]}==")]  # the canary pins it
        requirements.write_text("\n".join([*pins, f"{CANARY[0]}=={CANARY[1]}"]) + "\n")
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps", "--disable-pip",
               "--vulnerability-service", service, "--timeout", str(int(timeout)), "--format", "json",
               "--progress-spinner", "off", "--cache-dir", str(Path(tmp) / "cache"), "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 20 + 120)
        if out.is_file() and out.stat().st_size:
            return json.loads(out.read_text()), proc.stderr
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        return None, tail[-1] if tail else f"pip-audit exited with code {proc.returncode}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    parser.add_argument("--service", choices=("pypi", "osv"), default="pypi")
    parser.add_argument("--timeout", type=float, default=30.0, help="socket timeout per request, seconds")
    args = parser.parse_args()
    unavailable_ok = os.environ.get("AUDIT_UNAVAILABLE", "") == "warn"

    report, problem = run_pip_audit(args.lock, args.service, args.timeout)
    if report is None:
        print(f"audit: FAILED: pip-audit could not query the {args.service} vulnerability service: {problem}",
              file=sys.stderr)
        return _unavailable(unavailable_ok)
    verdict = read_report(report)
    for f in verdict.unfixed:
        print(f"audit: warning: {f.line()}")
    for f in verdict.fixable:
        print(f"audit: VULNERABLE: {f.line()}", file=sys.stderr)
    if not verdict.complete:
        if verdict.unaudited:
            print(f"audit: FAILED: {len(verdict.unaudited)} pinned package(s) could not be audited by the "
                  f"{args.service} service, e.g. {'; '.join(verdict.unaudited[:3])}", file=sys.stderr)
        if not verdict.canary_seen:
            print(f"audit: FAILED: the canary {CANARY[0]}=={CANARY[1]} was not reported with {CANARY[2]}: the "
                  f"{args.service} service answers without vulnerability data", file=sys.stderr)
    if verdict.fixable:
        return 1
    if not verdict.complete:
        return _unavailable(unavailable_ok)
    print(f"audit: {verdict.audited} pinned packages audited ({args.service}): no vulnerability with a fix"
          + (f", {len(verdict.unfixed)} without a fixed release (warnings above)" if verdict.unfixed else ""))
    return 0


def _unavailable(ok: bool) -> int:
    if ok:
        print("audit: WARNING: no vulnerability service could audit the lock; passing only because "
              "AUDIT_UNAVAILABLE=warn is set", file=sys.stderr)
        return 0
    print("audit: set AUDIT_UNAVAILABLE=warn to run the tests anyway on a runner without a vulnerability "
          "service", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
