#!/usr/bin/env bash
# Make sure a Docker engine answers; start one with this machine's recipe if none does.
#
# Idempotent: when `docker info` already works (a system engine, Docker Desktop, a CI service), this
# does nothing. Otherwise (root only) it starts dockerd the way that works on a bare Debian 12 VM or
# container without a bridge network or iptables (see ../shared/ENVIRONMENT.md):
#   dockerd --iptables=false --bridge=none --storage-driver=<overlay2|vfs>
# Containers then use host networking only. Waits until the engine answers (DOCKER_ENGINE_TIMEOUT
# seconds, default 60) and prints the engine's version.
#
# Storage driver: overlay2 when the kernel can mount an overlay on the file system of /var/lib/docker
# (probed with a real mount), else vfs. vfs works everywhere but copies the whole image for every
# container and every build instruction: on this project's machine a serving image build took 335 s
# and creating one container about 22 s with vfs, against 68-113 s and under a second with overlay2
# (benchmarks/README.md, "Rollout").
#
# Environment: DOCKERD_LOG (default /var/log/dockerd.log), DOCKERD_STORAGE_DRIVER (overlay2 | vfs;
# default: probed as above), DOCKER_ENGINE_TIMEOUT (default 60).
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/dockerd.log}
timeout=${DOCKER_ENGINE_TIMEOUT:-60}

overlay_works() {  # mount a throw-away overlay on the file system that will hold /var/lib/docker
  local root=/var/lib/docker probe ok=1
  mkdir -p "$root"
  probe=$(mktemp -d "$root/.overlay-probe.XXXXXX") || return 1
  mkdir -p "$probe"/{lower,upper,work,merged}
  if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
      "$probe/merged" 2>/dev/null; then
    umount "$probe/merged" && ok=0
  fi
  rm -rf "$probe"
  return $ok
}

answers() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

if ! command -v docker >/dev/null; then
  echo "docker-engine: the docker CLI is not installed (apt-get install -y docker.io)" >&2
  exit 1
fi
if answers; then
  echo "docker-engine: engine $(docker info --format '{{.ServerVersion}}') already answers"
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo "docker-engine: no engine answers and dockerd is not installed (apt-get install -y docker.io)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "docker-engine: no engine answers; starting dockerd needs root (or start your engine yourself)" >&2
  exit 1
fi

# A pid file left by a dockerd that died would make the new one refuse to start.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  rm -f /var/run/docker.pid
fi
if [ ! -f /var/run/docker.pid ]; then
  driver=${DOCKERD_STORAGE_DRIVER:-}
  if [ -z "$driver" ]; then
    if overlay_works; then driver=overlay2; else driver=vfs; fi
  fi
  echo "docker-engine: starting dockerd (storage driver $driver, no bridge, no iptables); log $log"
  setsid nohup dockerd --iptables=false --bridge=none --storage-driver="$driver" \
      >>"$log" 2>&1 </dev/null &
fi

for _ in $(seq 1 $((timeout * 2))); do
  if answers; then
    echo "docker-engine: engine $(docker info --format '{{.ServerVersion}}') answers"
    exit 0
  fi
  sleep 0.5
done
echo "docker-engine: dockerd did not answer within ${timeout}s; last lines of $log:" >&2
tail -n 20 "$log" >&2 || true
exit 1
