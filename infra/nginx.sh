#!/usr/bin/env bash
# `make demo`'s one system dependency pip cannot install: nginx, the stable endpoint (tasks/rollout/endpoint.py).
#
# Found (on PATH, or where Debian puts it: what endpoint.py's nginx_binary() looks for) -> nothing to do.
# Missing, as root on Debian (apt-get) -> `apt-get install -y nginx` without starting its system service
# (policy-rc.d, as .ci/run does: mlcycle starts and stops its own nginx, the package's would take port 80).
# Otherwise stop at once with the exact command to run.
#
# NGINX_CANDIDATES and POLICY_RC_D exist for tests/test_fresh_machine.py (a machine without nginx, played on
# one that has it); nobody needs to set them.
set -euo pipefail

candidates=${NGINX_CANDIDATES-/usr/sbin/nginx /usr/local/sbin/nginx}
policy=${POLICY_RC_D:-/usr/sbin/policy-rc.d}

found() {
  command -v nginx >/dev/null 2>&1 && return 0
  for candidate in $candidates; do
    [ -x "$candidate" ] && return 0
  done
  return 1
}

found && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "make demo needs nginx (the stable endpoint) and this is not a Debian machine: install nginx with your" \
       "system's package manager, then run make demo again" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "make demo needs nginx (the stable endpoint), which is not installed; run:  sudo apt-get install -y nginx" \
       " then make demo again" >&2
  exit 1
fi

echo "make demo: installing nginx (apt-get install -y nginx; its system service is not started)" >&2
created=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
fi
trap '[ "$created" = 0 ] || rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq nginx
if ! found; then
  echo "apt-get installed nginx but no nginx binary was found (PATH, $candidates)" >&2
  exit 1
fi
