"""The trainer tests' tiny model and synthetic data, for the benches that run on them."""

from tests.trainer.conftest import synthetic_dir, tiny_model_dir

__all__ = ["synthetic_dir", "tiny_model_dir"]
