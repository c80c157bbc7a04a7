"""`make demo` on a fresh machine: nginx, the one thing pip cannot install, is installed or asked for at once.

This machine has nginx, so a machine without it is played with a PATH that holds only stand-ins (``id``,
``apt-get``) and the few tools the script calls; ``NGINX_CANDIDATES`` and ``POLICY_RC_D`` point the script's
fixed paths into the test's folder. The stand-in ``apt-get`` records its calls, whether Debian's
``policy-rc.d`` refused service starts while it ran, and "installs" nginx where the script looks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

APT_GET = """#!/bin/bash
echo "apt-get $*" >> "$STUBS/calls.log"
if [ "$1" = install ]; then
  if [ -x "$POLICY_RC_D" ]; then "$POLICY_RC_D" nginx start; echo "policy-rc.d: $?" >> "$STUBS/calls.log"; fi
  printf '#!/bin/sh\\necho nginx\\n' > "$FAKE_NGINX" && chmod +x "$FAKE_NGINX"
fi
"""


@pytest.fixture
def no_nginx(tmp_path):
    """(environment, stubs folder) of a machine without nginx; ``uid`` and ``apt`` choose the rest."""

    def make(uid: int = 0, apt: bool = True) -> tuple[dict, Path]:
        stubs = tmp_path / "bin"
        stubs.mkdir(exist_ok=True)
        for tool in ("bash", "chmod", "rm", "make", "sh"):
            (stubs / tool).symlink_to(shutil.which(tool))
        (stubs / "id").write_text(f"#!/bin/bash\necho {uid}\n")
        if apt:
            (stubs / "apt-get").write_text(APT_GET)
        for stub in stubs.iterdir():
            if not stub.is_symlink():
                stub.chmod(0o755)
        env = {"PATH": str(stubs), "HOME": str(tmp_path), "STUBS": str(stubs),
               "NGINX_CANDIDATES": str(tmp_path / "sbin" / "nginx"), "FAKE_NGINX": str(tmp_path / "sbin" / "nginx"),
               "POLICY_RC_D": str(tmp_path / "policy-rc.d")}
        (tmp_path / "sbin").mkdir(exist_ok=True)
        return env, stubs

    return make


def _calls(stubs: Path) -> list[str]:
    log = stubs / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_on_this_machine_nginx_is_found_and_nothing_is_installed():
    result = subprocess.run(["make", "-s", "nginx"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=outside_make())
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stderr


def outside_make() -> dict[str, str]:
    """This environment without what a parent make exports (``make test`` runs these tests): under it a
    child make announces "make[1]: Entering directory" and sees the parent's flags."""
    return {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}}


def test_make_demo_checks_nginx_before_the_install():
    result = subprocess.run(["make", "-n", "-W", "requirements.lock", "demo"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=outside_make())
    lines = result.stdout.splitlines()
    assert lines[0] == "bash infra/nginx.sh", lines  # first: a missing nginx stops before a 2-minute install
    assert lines[-2:] == [".venv/bin/mlcycle up", ".venv/bin/mlcycle demo"]


def test_as_root_on_debian_make_installs_nginx_without_starting_its_service(no_nginx, tmp_path):
    env, stubs = no_nginx(uid=0)
    result = subprocess.run(["make", "-s", "nginx"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "installing nginx (apt-get install -y nginx; its system service is not started)" in result.stderr
    assert _calls(stubs) == ["apt-get update -qq", "apt-get install -y -qq nginx", "policy-rc.d: 101"]
    assert not (tmp_path / "policy-rc.d").exists()  # Debian's switch is removed after, as .ci/run does
    assert (tmp_path / "sbin" / "nginx").is_file()


def test_an_existing_policy_rc_d_is_left_alone(no_nginx, tmp_path):
    env, stubs = no_nginx(uid=0)
    (tmp_path / "policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
    (tmp_path / "policy-rc.d").chmod(0o755)
    result = subprocess.run(["bash", "infra/nginx.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "policy-rc.d").exists()


def test_without_root_it_stops_at_once_with_the_command_to_run(no_nginx):
    env, stubs = no_nginx(uid=1000)
    result = subprocess.run(["make", "-s", "nginx"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "run:  sudo apt-get install -y nginx  then make demo again" in result.stderr
    assert _calls(stubs) == []


def test_off_debian_it_says_to_use_the_systems_package_manager(no_nginx):
    env, stubs = no_nginx(uid=0, apt=False)
    result = subprocess.run(["bash", "infra/nginx.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "not a Debian machine" in result.stderr


def test_the_script_looks_where_the_endpoint_looks():
    """infra/nginx.sh and tasks/rollout/endpoint.py's nginx_binary() find nginx in the same places."""
    import inspect

    from mlcycle.tasks.rollout.endpoint import nginx_binary

    script = (ROOT / "infra" / "nginx.sh").read_text()
    for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        assert path in inspect.getsource(nginx_binary) and path in script
    assert os.access(nginx_binary(), os.X_OK)
