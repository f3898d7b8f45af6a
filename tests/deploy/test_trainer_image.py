"""Dockerfile.train, built for real on a CPU stand-in of its CUDA PyTorch base.

The real base (pytorch/pytorch, CUDA) cannot be pulled here and there is no GPU, so the image is built
with `--build-arg PYTORCH_IMAGE=` a CI-only stand-in: the local python stand-in
(deploy/base-images/build.sh) plus the CPU build of the pinned torch from the machine's wheel folder
(deploy/base-images/torch-cpu.Dockerfile). This proves that the Dockerfile builds, installs the
pinned trainer dependencies on top of a pre-installed torch without replacing it, and starts
`python -m trainer.train` as a non-root user with the recipe configs in place. It proves nothing
about CUDA, the real base image or training on a GPU.

Needs a Docker engine and the torch CPU wheel (PIP_FIND_LINKS, /opt/wheels): skipped without them,
except under CI (env CI set), where it fails.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
import tomllib

import pytest
import yaml

from .conftest import COMPOSE_FILE, DEPLOY, ROOT, docker_cli, ensure_base_images, missing, run

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _torch_pin() -> str:
    trainer = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["trainer"]
    [pin] = [r.split("==")[1] for r in trainer if r.startswith("torch==")]
    return pin


def _torch_wheel(version: str) -> str:
    folders = [f for f in os.environ.get("PIP_FIND_LINKS", "").split() if os.path.isdir(f)] + ["/opt/wheels"]
    for folder in folders:
        found = sorted(glob.glob(os.path.join(folder, f"torch-{version}+cpu-cp311-*.whl")))
        if found:
            return found[-1]
    missing(f"the CPU wheel of torch {version}", f"looked in {folders}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def trainer_image():
    docker = docker_cli()
    ensure_base_images(docker, ("debian:bookworm-slim", "python:3.11-slim-bookworm"))
    version = _torch_pin()
    base = f"vlm-od-rl/ci-torch-cpu:{version}"
    if subprocess.run([docker, "image", "inspect", base], capture_output=True).returncode:
        wheel = _torch_wheel(version)
        with tempfile.TemporaryDirectory() as context:
            os.link(wheel, os.path.join(context, os.path.basename(wheel))) if os.stat(wheel).st_dev == \
                os.stat(context).st_dev else shutil.copy(wheel, context)
            shutil.copy(DEPLOY / "base-images" / "torch-cpu.Dockerfile", os.path.join(context, "Dockerfile"))
            run([docker, "build", "-q", "-t", base, "--build-arg", f"TORCH_WHEEL={os.path.basename(wheel)}", context],
                timeout=900)
    image = "vlm-od-rl/trainer:ci-cpu"
    run([docker, "build", "-q", "-f", str(ROOT / "Dockerfile.train"), "--build-arg", f"PYTORCH_IMAGE={base}",
         "-t", image, str(ROOT)], timeout=900)
    return docker, image


def test_entry_point_starts_as_non_root_and_parses_the_trainer_arguments(trainer_image):
    docker, image = trainer_image
    helped = run([docker, "run", "--rm", "--network", "none", image, "--help"], timeout=180)
    # the arguments docker-compose.yml passes (TrlParser reads --config itself, outside the help)
    for argument in ("--reward_urls", "--output_dir"):
        assert re.search(rf"^\s+{argument}\b", helped.stdout, re.M), f"{argument} missing:\n{helped.stdout[:2000]}"
    uid = run([docker, "run", "--rm", "--network", "none", "--entrypoint", "id", image, "-u"]).stdout.strip()
    assert uid == "10001"
    inspect = run([docker, "image", "inspect", "--format", "{{json .Config.Entrypoint}} {{json .Config.ExposedPorts}}",
                   image]).stdout
    assert '["python","-m","trainer.train"]' in inspect and "9400/tcp" in inspect


def test_pinned_torch_is_kept_and_every_trainer_pin_is_installed(trainer_image):
    docker, image = trainer_image
    script = (
        "import importlib.metadata as m, re, sys, torch\n"
        "bad = []\n"
        "for line in open('/tmp/pins.txt'):\n"
        "    name, _, want = line.strip().partition('==')\n"
        "    have = m.version(name).split('+')[0]\n"
        "    if have != want: bad.append((name, want, have))\n"
        "print('torch', torch.__version__)\n"
        "sys.exit(repr(bad) if bad else 0)\n"
    )
    pins = [line for line in (DEPLOY / "trainer" / "requirements.txt").read_text().splitlines()
            if re.match(r"^[A-Za-z0-9_.\-]+==", line)]
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("\n".join(pins) + "\n")
        f.flush()
        os.chmod(f.name, 0o644)
        out = run([docker, "run", "--rm", "--network", "none", "-v", f"{f.name}:/tmp/pins.txt:ro",
                   "--entrypoint", "python", image, "-c", script], timeout=180)
    assert f"torch {_torch_pin()}+cpu" in out.stdout  # the base's own build, not a re-download


def test_the_compose_default_config_is_in_the_image(trainer_image):
    docker, image = trainer_image
    command = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["trainer"]["command"]
    config = re.sub(r"\$\{TRAINER_CONFIG:-([^}]*)\}", r"\1", command[command.index("--config") + 1])
    run([docker, "run", "--rm", "--network", "none", "--entrypoint", "test", image, "-f", f"/app/{config}"])
