#!/usr/bin/env bash
# make image: builds docker/Dockerfile with buildah (no Docker daemon needed).
#
# BASE_IMAGE picks the base:
#   auto (default)   the official tensorflow/tfx:1.16.0 when it can be pulled, else
#                    a Debian 12 base made here with debootstrap
#   debian           that debootstrapped base (localhost/debian-bookworm-local)
#   anything else    used as given (must hold python3; TFX optional, see the Dockerfile)
# IMAGE names the result (default localhost/tfx-compression:0.1.0).
# The machine's CA bundle is mounted into the build for the downloads; it does not
# stay in the image. Installs buildah and debootstrap with apt-get when missing.
# Needs root. Storage: buildah's vfs driver (works without overlay support), in
# BUILDAH_ROOT (default /var/cache/tfx-compression/containers).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
IMAGE="${IMAGE:-localhost/tfx-compression:0.1.0}"
BASE_IMAGE="${BASE_IMAGE:-auto}"
OFFICIAL=docker.io/tensorflow/tfx:1.16.0
DEBIAN_BASE=localhost/debian-bookworm-local
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${CACHE_DIR:-/var/cache/tfx-compression}"
export BUILDAH_ROOT="${BUILDAH_ROOT:-$CACHE/containers}"

log() { echo "== image: $*"; }
die() { echo "error: $*" >&2; exit 2; }
bah() { buildah --storage-driver vfs --root "$BUILDAH_ROOT" "$@"; }

[ "$(id -u)" = 0 ] || die "make image needs root (buildah with chroot isolation, debootstrap)."
for tool in buildah debootstrap; do
  if ! command -v "$tool" >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "$tool" > /dev/null
  fi
done

# A Debian 12 root as a local image, once.
debian_base() {
  if bah inspect --type image "$DEBIAN_BASE" >/dev/null 2>&1; then
    log "reusing $DEBIAN_BASE"
    return
  fi
  local root="$CACHE/bookworm-base" c m
  rm -rf --one-file-system "$root"
  log "debootstrap bookworm (about 1 minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$MIRROR" > "$CACHE/debootstrap-bookworm.log"
  c="$(bah from scratch)"
  m="$(bah mount "$c")"
  cp -a "$root/." "$m/"
  bah umount "$c"
  bah commit -q "$c" "$DEBIAN_BASE" > /dev/null
  bah rm "$c" > /dev/null
  rm -rf --one-file-system "$root"
}

mkdir -p "$CACHE"
case "$BASE_IMAGE" in
  auto)
    if bah inspect --type image "$OFFICIAL" >/dev/null 2>&1 \
        || timeout 300 buildah --storage-driver vfs --root "$BUILDAH_ROOT" pull -q "$OFFICIAL" >/dev/null 2>&1; then
      base="$OFFICIAL"
    else
      log "cannot pull $OFFICIAL: using a debootstrapped Debian 12 base"
      debian_base
      base="$DEBIAN_BASE"
    fi ;;
  debian) debian_base; base="$DEBIAN_BASE" ;;
  *) base="$BASE_IMAGE" ;;
esac

log "building $IMAGE FROM $base"
t0=$SECONDS
bah bud --isolation chroot --layers=false \
  --build-arg "BASE_IMAGE=$base" \
  -v /etc/ssl/certs/ca-certificates.crt:/run/build-ca.crt:ro \
  -f "$REPO/docker/Dockerfile" --ignorefile "$REPO/docker/Dockerfile.dockerignore" \
  -t "$IMAGE" "$REPO"
log "built $IMAGE in $((SECONDS - t0)) s (buildah --root $BUILDAH_ROOT --storage-driver vfs images)"
