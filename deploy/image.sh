#!/usr/bin/env bash
# Assembles a runnable raftlot image from a binary built on this machine, without pulling anything:
# FROM scratch plus the binary, the shared libraries `ldd` says it loads, and the dynamic loader.
# deploy/Dockerfile is the image for users; it needs the official Rust and Debian images, which a
# machine without registry access cannot pull, so the compose file and the container tests use this.
#
#   deploy/image.sh [BINARY] [TAG]
#     BINARY  default target/release/raftlot (tests pass their debug build)
#     TAG     default raftlot:local
#
# The binary is stripped on the way in: debug info is most of a debug build's size and only slows
# the copy into the image. Both the binary and its libraries come from this machine, so the image
# runs wherever this machine's glibc would.
set -euo pipefail

binary="${1:-target/release/raftlot}"
tag="${2:-raftlot:local}"

[[ -x "$binary" ]] || { echo "image.sh: $binary is not an executable; build it first (cargo build --release)" >&2; exit 1; }
command -v docker >/dev/null || { echo "image.sh: docker is not installed" >&2; exit 1; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs" "$context/data"

# Every library (and the loader) at the same path it has here, so the binary's interpreter path
# and the loader's default search path both find them. `ldd` prints "name => /path (addr)" for
# libraries and "/path (addr)" for the loader; the vDSO has no path and lives in the kernel.
ldd "$binary" | awk '/=>/ { print $3; next } /^[[:space:]]*\// { print $1 }' | while read -r lib; do
    [[ -n "$lib" && -e "$lib" ]] || continue
    mkdir -p "$context/rootfs$(dirname "$lib")"
    cp -L "$lib" "$context/rootfs$lib"
done
# Debian keeps the loader under /lib64 as a link into /lib/x86_64-linux-gnu; ldd names the link,
# which `cp -L` turned into a file, so the binary's interpreter path works as it is.
if command -v strip >/dev/null; then
    strip -o "$context/rootfs/raftlot" "$binary"
else
    cp "$binary" "$context/rootfs/raftlot"
fi

# glibc reads nsswitch.conf to decide how to resolve peers' host names: /etc/hosts first (what
# docker writes for --add-host), then DNS (docker's embedded server, or the cluster's).
mkdir -p "$context/rootfs/etc"
echo "hosts: files dns" >"$context/rootfs/etc/nsswitch.conf"

# The runtime settings (user, environment, volume, ports, health check, entrypoint) are
# deploy/Dockerfile's own, from its USER line on, so the two images cannot drift apart.
{
    echo "FROM scratch"
    echo "COPY rootfs/ /"
    # The data directory belongs to the unprivileged user, so a fresh named volume mounted there
    # (which copies the image directory's owner) is writable without running as root.
    echo "COPY --chown=65532:65532 data /data"
    sed -n '/^USER /,$p' "$(dirname "$0")/Dockerfile"
} >"$context/Dockerfile"
grep -q '^ENTRYPOINT' "$context/Dockerfile" || { echo "image.sh: no USER..ENTRYPOINT section in deploy/Dockerfile" >&2; exit 1; }

# The legacy builder needs nothing beyond the engine; BuildKit (where installed) would work too.
DOCKER_BUILDKIT=0 docker build --quiet --tag "$tag" "$context" >/dev/null
echo "$tag"
