"""One lock: requirements.lock pins every version (transitive ones included, with hashes); the venv
(`make install`), the images' requirement files (cut from it by `make lock`) and CI all install it.

These checks are offline: they compare files with each other and with the running venv. Whether the
lock is the newest resolution is `make lock UPGRADE=1`'s business, not the tests'.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .conftest import DEPLOY, ROOT

LOCK = ROOT / "requirements.lock"
INTEGRATIONS_LOCK = ROOT / "requirements-integrations.lock"  # locked without their dependencies
INTEGRATIONS = "integrations"
GPU_LOCK = ROOT / "requirements-gpu.lock"  # deepspeed for GPU machines: locked apart, never installed here
GPU = "gpu"
APART = {INTEGRATIONS: INTEGRATIONS_LOCK, GPU: GPU_LOCK}  # extras locked apart from requirements.lock
REWARD_IMAGE = DEPLOY / "reward-api" / "requirements.txt"
TRAINER_IMAGE = DEPLOY / "trainer" / "requirements.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins(path) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, sha256 hashes) of a requirements file in pip's format."""
    text = re.sub(r"\\\n", " ", path.read_text())  # join continuation lines
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line)
        assert match, f"{path.name}: not a pinned requirement: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in found, f"{path.name} pins {name} twice"
        found[name] = (match[2], frozenset(re.findall(r"sha256:([0-9a-f]{64})", match[3])))
    assert found, f"{path.name} pins nothing"
    return found


def direct(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    return [Requirement(r) for r in project["dependencies"]] + [
        Requirement(r) for extra in extras for r in project["optional-dependencies"][extra]
    ]


def public(version: str) -> str:
    """The version without its local label: torch 2.13.0+cpu is a build of 2.13.0."""
    return version.split("+", 1)[0]


def test_every_pin_of_pyproject_is_in_the_lock():
    lock = pins(LOCK)
    extras = [extra for extra in PYPROJECT["project"]["optional-dependencies"] if extra not in APART]
    build = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    stale = {}
    for req in direct(*extras) + build:
        [spec] = req.specifier
        assert spec.operator == "==", f"pyproject.toml must pin exactly: {req}"
        have = lock.get(canonicalize_name(req.name), ("absent", ()))[0]
        if public(have) != spec.version:
            stale[req.name] = (spec.version, have)
    assert not stale, f"requirements.lock is stale (pyproject pin, lock): {stale}. Run: make lock"


@pytest.mark.parametrize("extra", sorted(APART))
def test_the_extras_locked_apart_are_exactly_as_pinned_and_share_nothing_with_the_lock(extra):
    """The integrations extra (the frameworks, without their own dependencies: CUDA wheels, deepspeed)
    and the gpu extra (deepspeed, a source archive) are each locked alone: exactly pyproject's pins,
    each with its hash, none also in requirements.lock."""
    locked = pins(APART[extra])
    pinned = {canonicalize_name(r.name): str(next(iter(r.specifier)).version)
              for r in (Requirement(x) for x in PYPROJECT["project"]["optional-dependencies"][extra])}
    assert {name: version for name, (version, _) in locked.items()} == pinned, "Run: make lock"
    assert all(hashes for _, hashes in locked.values())
    assert not set(locked) & set(pins(LOCK)), "a package pinned in both locks"


def test_the_gpu_lock_is_not_installed_here():
    """deepspeed needs a GPU: `make install` (and so CI) installs the other locks, not this one."""
    makefile = (ROOT / "Makefile").read_text()
    install = makefile[makefile.index("$(STAMP):"):makefile.index("install: $(STAMP)")]
    assert "INTEGRATIONS_LOCK" in install and "GPU_LOCK" not in install


def test_every_locked_file_is_checked_by_its_hash_and_torch_is_the_cpu_build():
    lock = pins(LOCK)
    assert all(hashes for _, hashes in lock.values()), "every lock entry needs its sha256 (make lock)"
    assert lock["torch"][0].endswith("+cpu"), f"torch {lock['torch'][0]}: the lock must take the local CPU wheel"
    cuda = [name for name in lock if name.startswith(("nvidia-", "triton")) or "+cu" in lock[name][0]]
    assert not cuda, f"CUDA packages in the lock: {cuda}"


@pytest.mark.parametrize("image", [REWARD_IMAGE, TRAINER_IMAGE], ids=["reward-api", "trainer"])
def test_image_requirements_are_cut_from_the_lock(image):
    lock, wanted = pins(LOCK), pins(image)
    differ = {
        name: (version, lock.get(name, ("absent",))[0])
        for name, (version, _) in wanted.items()
        if lock.get(name, ("absent",))[0] != version
    }
    assert not differ, (
        f"{image.relative_to(ROOT)} differs from requirements.lock (image, lock): {differ}. Run: make lock"
    )
    for name, (_, hashes) in wanted.items():
        assert hashes <= lock[name][1], f"{name}: a hash in {image.relative_to(ROOT)} is not the lock's"
    assert "make lock" in image.read_text().split("\n", 3)[1], "generated by `make lock`, not by hand"


def test_reward_image_has_its_extra_hashed_and_no_trainer_packages():
    wanted = pins(REWARD_IMAGE)
    missing = {r.name for r in direct("service") if canonicalize_name(r.name) not in wanted}
    assert not missing, f"{REWARD_IMAGE.name} lacks {missing}"
    assert all(hashes for _, hashes in wanted.values()), "Dockerfile.reward installs with --require-hashes"
    assert not {"torch", "transformers", "trl"} & set(wanted)
    dockerfile = (ROOT / "Dockerfile.reward").read_text()
    assert re.search(r"pip install --no-deps --require-hashes .*-r /tmp/requirements\.txt", dockerfile)
    assert "COPY deploy/reward-api/requirements.txt /tmp/requirements.txt" in dockerfile


def test_trainer_image_has_its_extra_but_leaves_torch_to_the_base_image():
    wanted = pins(TRAINER_IMAGE)
    missing = {r.name for r in direct("trainer") if r.name != "torch" and canonicalize_name(r.name) not in wanted}
    assert not missing, f"{TRAINER_IMAGE.name} lacks {missing}"
    assert "torch" not in wanted, "the CUDA base image brings torch; Dockerfile.train checks its version"
    assert {"sympy", "networkx", "filelock"} <= set(wanted), "torch's own dependencies come from the lock"
    assert "COPY deploy/trainer/requirements.txt" in (ROOT / "Dockerfile.train").read_text()


def test_the_venv_is_the_lock():
    wrong = {}
    for name, (version, _) in (pins(LOCK) | pins(INTEGRATIONS_LOCK)).items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "absent"
        if have != version:
            wrong[name] = (version, have)
    assert not wrong, f"the venv is not the locks (lock, venv): {wrong}. Run: make install"
