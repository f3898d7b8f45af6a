"""System tools that some tests need (promtool, hadolint, shellcheck, docker...).

A test asks for one with :func:`executable`; when it is absent the test is skipped, and the skip says
which tool and how to get it. Under CI every skip is a failure (tests/support/ci_skips.py), so CI
must install them: deploy/ci-setup.sh does.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def unavailable(what: str, how: str) -> None:
    """Skip the running test: ``what`` is not available, ``how`` says how to get it."""
    pytest.skip(f"{what} is not available ({how})")


def executable(name: str, how: str) -> str:
    """Path of the executable ``name``: the running venv's, the project's .venv's, then PATH's."""
    for folder in (Path(sys.executable).parent, ROOT / ".venv" / "bin"):
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        unavailable(f"`{name}`", how)
    return str(found)
