"""Shared fixtures of the trainer tests: one tiny model and one synthetic data set per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from trainer.tiny_model import build

    return build(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    from trainer.synthetic import generate

    out = tmp_path_factory.mktemp("synthetic")
    generate(out, 16, seed=0)
    return out
