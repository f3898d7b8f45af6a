"""Suite-wide plugins: under CI a skip is a failure (tests/support/ci_skips.py); pytester for the
test of that rule. And the fixtures the trainer and bench tests share: one tiny model and one
synthetic data set per session."""

import pytest

pytest_plugins = ["tests.support.ci_skips", "pytester"]


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
