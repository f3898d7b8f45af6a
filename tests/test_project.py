"""Packaging facts a user relies on: a console script for every command-line tool, each pointing at
a ``main`` that runs with no arguments, installed by ``make install``; the license is declared."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SCRIPTS = PROJECT["scripts"]
PACKAGES = ("services", "shared", "trainer")


def module_file(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def command_line_modules() -> set[str]:
    """Every module run as ``python -m MODULE``: those with a ``__main__`` guard."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if 'if __name__ == "__main__":' in path.read_text():
                found.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_points_at_a_main_that_needs_no_arguments(script):
    module, _, function = SCRIPTS[script].partition(":")
    path = module_file(module)
    assert path.is_file(), f"{script}: {module} does not exist ({path.relative_to(ROOT)})"
    [main] = [
        node for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef) and node.name == function
    ] or [None]
    assert main is not None, f"{script}: {module} has no top-level {function}()"
    args = main.args
    assert len(args.defaults) == len(args.args) and not args.kwonlyargs, (
        f"{script}: {module}.{function} must run with no arguments (console scripts call it so)"
    )


def test_every_command_line_module_has_a_script():
    scripted = {target.partition(":")[0] for target in SCRIPTS.values()}
    assert command_line_modules() - scripted == set(), "add these to [project.scripts] in pyproject.toml"


def test_the_venv_has_the_scripts_and_the_license():
    dist = metadata.distribution("vlm-od-rl")
    installed = {e.name: e.value for e in dist.entry_points if e.group == "console_scripts"}
    assert installed == SCRIPTS, "the venv predates pyproject.toml's [project.scripts]: run make install"
    assert dist.metadata["License-Expression"] == PROJECT["license"] == "Apache-2.0"
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License\n")


def test_a_script_runs():
    script = Path(sys.executable).parent / "reward-score"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "score" in done.stdout, done.stderr
