#!/usr/bin/env bash
# Builds LOCAL STAND-INS for the registry images the compose stack starts FROM, out of Debian
# packages, because registries (Docker Hub) are unreachable on the CI machine:
#
#   debian:bookworm-slim        <- debootstrap --variant=minbase bookworm (deb.debian.org)
#   python:3.11-slim-bookworm   <- the above + Debian's python3 (3.11), python3-venv, python3-pip,
#                                  trusting the host's CA bundle (pip behind a TLS-inspecting proxy)
#   prom/prometheus:<tag>       <- the above + Debian's prometheus package (2.42, not <tag>)
#
# They are tagged with the real images' names so that Dockerfile.reward, deploy/nginx/Dockerfile and
# docker-compose.yml are built and run unchanged. They are NOT the real images: the real
# python image has its own CPython build in /usr/local; the Dockerfiles only rely on `python3` on
# PATH and `python3 -m venv`, which both provide. On a machine that can pull from Docker Hub you do
# not need this script at all.
#
# Idempotent and cached: an image that already exists is kept (FORCE=1 rebuilds); the debootstrap
# root file system is cached as a tarball in $STANDIN_CACHE (default /var/cache/vlm-od-rl).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${STANDIN_CACHE:-/var/cache/vlm-od-rl}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
FORCE="${FORCE:-0}"
DEBIAN_IMAGE="debian:bookworm-slim"
PYTHON_IMAGE="python:3.11-slim-bookworm"
# The Prometheus image docker-compose.yml names (one source of truth: the compose file).
PROM_IMAGE="$(sed -n 's/^ *image: *\(prom\/prometheus:[^ ]*\).*/\1/p' "$ROOT/docker-compose.yml" | head -n1)"
[ -n "$PROM_IMAGE" ] || { echo "cannot find the prom/prometheus image in docker-compose.yml" >&2; exit 1; }
LABEL="org.opencontainers.image.description=\"LOCAL STAND-IN built from Debian packages by deploy/base-images/build.sh\""

have() { [ "$FORCE" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }
log() { printf '[base-images] %s\n' "$*" >&2; }

mkdir -p "$CACHE"
TARBALL="$CACHE/debian-bookworm-minbase.tar"

if ! have "$DEBIAN_IMAGE"; then
    if [ ! -s "$TARBALL" ] || [ "$FORCE" = 1 ]; then
        command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
        ROOTFS="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
        trap 'rm -rf "$ROOTFS"' EXIT
        log "debootstrap bookworm from $MIRROR (about a minute)"
        debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
            || { tail -n 30 "$CACHE/debootstrap.log" >&2; exit 1; }
        # Same trimming as the official slim images: no apt caches, package lists, docs or locales.
        rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
               "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
               "$ROOTFS"/usr/share/locale/* "$ROOTFS"/var/log/*.log
        printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
            "$MIRROR" "$MIRROR" >"$ROOTFS/etc/apt/sources.list"
        tar --numeric-owner -C "$ROOTFS" -cf "$TARBALL.tmp" .
        mv "$TARBALL.tmp" "$TARBALL"
        rm -rf "$ROOTFS"; trap - EXIT
    else
        log "using cached root file system $TARBALL"
    fi
    log "importing $DEBIAN_IMAGE"
    docker import --change 'CMD ["bash"]' --change "LABEL $LABEL" "$TARBALL" "$DEBIAN_IMAGE" >/dev/null
else
    log "$DEBIAN_IMAGE present"
fi

if ! have "$PYTHON_IMAGE"; then
    log "building $PYTHON_IMAGE from Debian's python3"
    CONTEXT="$(mktemp -d)"
    cp "$HERE/python.Dockerfile" "$CONTEXT/Dockerfile"
    cp "${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$CONTEXT/host-ca-bundle.crt"
    docker build -q -t "$PYTHON_IMAGE" "$CONTEXT" >/dev/null
    rm -rf "$CONTEXT"
else
    log "$PYTHON_IMAGE present"
fi

if ! have "$PROM_IMAGE"; then
    log "building $PROM_IMAGE from Debian's prometheus package"
    docker build -q -t "$PROM_IMAGE" -f "$HERE/prometheus.Dockerfile" "$HERE" >/dev/null
else
    log "$PROM_IMAGE present"
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^(debian:bookworm-slim|python:3.11-slim-bookworm|prom/prometheus:)" >&2
