"""Writes the pinned dependency files of the images: every package an image installs, pinned to one
version (and, for the reward service, its PyPI sha256 hashes for pip --require-hashes).

The versions are the project's own pins (pyproject.toml: base dependencies + the `service` extra) and,
for their transitive dependencies, the versions installed in the project's .venv (which `make test`
runs the service on). Run it with the project's venv after changing a pin:

    .venv/bin/python deploy/reward-api/lock.py            # rewrite both files (needs PyPI for hashes)
    .venv/bin/python deploy/reward-api/lock.py --check    # offline: exit 1 if a file is stale

deploy/reward-api/requirements.txt  dependencies + [service], with hashes   (Dockerfile.reward)
deploy/trainer/requirements.txt     dependencies + [trainer], versions only  (Dockerfile.train: the
                                    CUDA base image brings torch and its NVIDIA libraries, so pip
                                    resolves against what is there; torch must match the pin)

tests/deploy/test_static.py runs --check, so the images cannot drift from pyproject.toml.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
import urllib.request
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[2]
# output file -> (extras, with hashes)
LOCKS = {
    ROOT / "deploy/reward-api/requirements.txt": (("service",), True),
    ROOT / "deploy/trainer/requirements.txt": (("trainer",), False),
}
# The image is linux (amd64 or arm64), CPython 3.11.
TARGET_ENV = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux",
              "python_version": "3.11", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "os_name": "posix"}
WHEEL_OK = re.compile(r"-(cp311|abi3|py3|py2\.py3)-[^-]+-(any|(many|musl)linux[^.]*_(x86_64|aarch64))(\.|$)")


def top_level(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def closure(extras: tuple[str, ...]) -> dict[str, str]:
    """name -> version for the top-level pins and everything they need on the target."""
    pins: dict[str, str] = {}
    todo = top_level(extras)
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**TARGET_ENV, "extra": ""}):
            continue
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{req.name} is not installed in {sys.prefix}: run `make install` first")
        version = dist.version
        if not req.specifier.contains(version.split("+", 1)[0], prereleases=True):
            sys.exit(f"installed {req.name}=={version} does not satisfy {req}: reinstall the venv")
        if name in pins:
            continue
        # A local label (torch 2.13.0+cpu in the CPU venv) names a build, not a version: the image's
        # own build (torch 2.13.0+cu128 in the CUDA base) satisfies the plain pin.
        pins[name] = version.split("+", 1)[0]
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            env = {**TARGET_ENV, "extra": ""}
            if sub_req.marker is None or sub_req.marker.evaluate(env):
                todo.append(sub_req)
            # extras requested of this package (e.g. uvicorn[standard]) are pulled in too
            for extra in req.extras:
                if sub_req.marker is not None and sub_req.marker.evaluate({**TARGET_ENV, "extra": extra}):
                    todo.append(sub_req)
    return dict(sorted(pins.items()))


def hashes(name: str, version: str) -> list[str]:
    """sha256 of every linux CPython-3.11 wheel of name==version (PEP 691 JSON simple index)."""
    req = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        files = json.load(r)["files"]
    out = set()
    for f in files:
        if not f["filename"].endswith(".whl") or f.get("yanked"):
            continue
        try:
            wname, wversion, _, _ = parse_wheel_filename(f["filename"])
        except InvalidWheelFilename:  # ancient uploads with non-standard names
            continue
        if wname == name and str(wversion) == version and WHEEL_OK.search(f["filename"]):
            out.add(f["hashes"]["sha256"])
    if not out:
        sys.exit(f"no linux CPython 3.11 wheel of {name}=={version} on PyPI")
    return sorted(out)


def pinned_lines(text: str) -> dict[str, str]:
    return {canonicalize_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", text, re.M)}


def render(pins: dict[str, str], extras: tuple[str, ...], with_hashes: bool) -> str:
    install = ("`pip install --require-hashes --no-deps --only-binary=:all:` in Dockerfile.reward" if with_hashes
               else "`pip install -r` in Dockerfile.train")
    lines = [f"# Generated by deploy/reward-api/lock.py from pyproject.toml (dependencies + {list(extras)}).",
             "# Do not edit: change pyproject.toml, reinstall the venv, rerun the script.",
             f"# Installed with {install}."]
    for name, version in pins.items():
        if not with_hashes:
            lines.append(f"{name}=={version}")
            continue
        lines.append(f"{name}=={version} \\")
        hs = hashes(name, version)
        lines += [f"    --hash=sha256:{h} \\" for h in hs[:-1]] + [f"    --hash=sha256:{hs[-1]}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="offline: compare the files with the venv and pyproject")
    args = ap.parse_args()
    stale = 0
    for out, (extras, with_hashes) in LOCKS.items():
        pins = closure(extras)
        name = out.relative_to(ROOT)
        if args.check:
            have = pinned_lines(out.read_text()) if out.exists() else {}
            if have != pins:
                missing = {k: v for k, v in pins.items() if have.get(k) != v}
                extra = {k: v for k, v in have.items() if pins.get(k) != v}
                print(f"{name} is stale. Wanted but absent or different: {missing}; present but not wanted: "
                      f"{extra}. Run: .venv/bin/python deploy/reward-api/lock.py", file=sys.stderr)
                stale += 1
            else:
                print(f"{name}: {len(pins)} pins, up to date")
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(pins, extras, with_hashes))
        print(f"wrote {name}: {len(pins)} packages")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
