#!/usr/bin/env bash
# Build the local test image localhost/nestling-test:latest with podman, without any registry.
#
# Idempotent: skips the build when the image exists and carries the hash of this script, the Containerfile
# and the busybox binary. Writes a containers.conf that lets podman run here (runc, cgroupfs, no default
# ulimits) and prints, as its only stdout line:  export CONTAINERS_CONF=<path>
#
# Env: NESTLING_TEST_IMAGE (image name), NESTLING_CONTAINERS_CONF (where to write containers.conf),
#      NESTLING_BUSYBOX (a static busybox; default /bin/busybox from Debian's busybox-static).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${NESTLING_TEST_IMAGE:-localhost/nestling-test:latest}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/nestling/test-image"
CONF="${NESTLING_CONTAINERS_CONF:-$CACHE/containers.conf}"
BUSYBOX="${NESTLING_BUSYBOX:-/bin/busybox}"
LABEL="io.nestling.test-image.hash"

die() { echo "build.sh: $*" >&2; exit 1; }
log() { echo "build.sh: $*" >&2; }

command -v podman >/dev/null 2>&1 || die "podman is not installed: apt-get install -y podman runc (or your distro's equivalent)"
[ -x "$BUSYBOX" ] || die "no static busybox at $BUSYBOX: apt-get install -y busybox-static, or set NESTLING_BUSYBOX"
if command -v file >/dev/null 2>&1 && ! file -L "$BUSYBOX" | grep -q 'statically linked'; then
    die "$BUSYBOX is not statically linked; a FROM scratch image needs busybox-static"
fi

mkdir -p "$CACHE" "$(dirname "$CONF")"
# runc: crun fails on cgroup-v1/hybrid hosts; cgroupfs: no systemd needed; default_ulimits = []: podman's
# default RLIMIT_NOFILE cannot be raised inside an unprivileged sandbox.
{
    echo "[containers]"
    echo "default_ulimits = []"
    echo
    echo "[engine]"
    if command -v runc >/dev/null 2>&1; then echo 'runtime = "runc"'; fi
    echo 'cgroup_manager = "cgroupfs"'
    echo 'events_logger = "file"'
} > "$CONF.tmp"
mv "$CONF.tmp" "$CONF"
export CONTAINERS_CONF="$CONF"

HASH="$(cat "$HERE/Containerfile" "${BASH_SOURCE[0]}" "$BUSYBOX" | sha256sum | cut -c1-16)"
if podman image exists "$IMAGE"; then
    have="$(podman image inspect --format "{{ index .Labels \"$LABEL\" }}" "$IMAGE" 2>/dev/null || true)"
    if [ "$have" = "$HASH" ]; then
        log "$IMAGE is up to date ($HASH)"
        echo "export CONTAINERS_CONF=$CONF"
        exit 0
    fi
    log "$IMAGE is stale (${have:-no hash}), rebuilding"
fi

CTX="$(mktemp -d "$CACHE/context.XXXXXX")"
trap 'rm -rf "$CTX"' EXIT
ROOT="$CTX/rootfs"
mkdir -p "$ROOT/bin" "$ROOT/etc" "$ROOT/root" "$ROOT/tmp"
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
chmod 0755 "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$ROOT/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOT/etc/group"
cp "$HERE/Containerfile" "$CTX/Containerfile"

log "building $IMAGE ($HASH)"
podman build --quiet --label "$LABEL=$HASH" -t "$IMAGE" -f "$CTX/Containerfile" "$CTX" >&2 \
    || die "podman build failed (CONTAINERS_CONF=$CONF)"
echo "export CONTAINERS_CONF=$CONF"
