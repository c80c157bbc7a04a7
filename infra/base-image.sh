#!/usr/bin/env bash
# Build the serving images' base image from Debian's packages, without any container registry.
#
#   infra/base-image.sh [TAG]        (default: $MLCYCLE_BASE_IMAGE or local/python-base:bookworm)
#
# Cached by tag: when `docker image inspect TAG` finds the image, nothing is built. Otherwise
# debootstrap (variant minbase) installs Debian's python3 (3.11 on bookworm), venv, pip and the CA
# certificates into a temporary root file system, which `docker import` turns into the image. Takes
# about a minute and needs root and the debootstrap package. Concurrent callers wait on a lock, so
# two test sessions never build it twice.
#
# Environment: DEBIAN_SUITE (default bookworm), DEBIAN_MIRROR (default http://deb.debian.org/debian),
# MLCYCLE_BASE_IMAGE (the tag), BASE_IMAGE_REBUILD=1 (build even when the tag exists).
# On machines that can pull from a registry, skip this script and set rollout.base_image to a normal
# Python 3.11 image instead (e.g. python:3.11-slim-bookworm).
set -euo pipefail

tag=${1:-${MLCYCLE_BASE_IMAGE:-local/python-base:bookworm}}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=python3,python3-venv,python3-pip,ca-certificates

cached() { docker image inspect "$tag" >/dev/null 2>&1; }

exec 9>/tmp/mlcycle-base-image.lock
flock 9
if cached && [ "${BASE_IMAGE_REBUILD:-0}" != 1 ]; then
  echo "base-image: $tag is cached ($(docker image inspect -f '{{.Id}}' "$tag" | cut -c1-19))"
  exit 0
fi
for tool in debootstrap docker; do
  command -v "$tool" >/dev/null || { echo "base-image: $tool is not installed (apt-get install -y $tool)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "base-image: debootstrap needs root" >&2; exit 1; }

rootfs=$(mktemp -d /tmp/mlcycle-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
chmod 755 "$rootfs"  # it becomes the image's "/": mktemp's 0700 would lock every non-root user out
start=$(date +%s)
echo "base-image: debootstrap $suite ($packages) from $mirror"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  echo "base-image: debootstrap failed; last lines of $rootfs.log:" >&2; tail -n 20 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
# Nothing downloaded at build time is needed at run time.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log

tar -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --change "LABEL org.opencontainers.image.title=mlcycle-python-base" \
  --change "LABEL org.opencontainers.image.description=\"Debian $suite minbase with python3, built by debootstrap\"" \
  --change "LABEL org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  - "$tag" >/dev/null
echo "base-image: built $tag in $(( $(date +%s) - start ))s, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
