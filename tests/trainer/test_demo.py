"""`make demo` end to end, shortened: tiny model, synthetic data, the service started and stopped by
the demo itself, GRPO steps with every reward over HTTP, and the training-curve PNG."""

from __future__ import annotations

import json

import pytest

from trainer import demo

pytestmark = pytest.mark.slow


def test_the_demo_trains_with_its_own_service_and_draws_the_curves(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert demo.main(["--out", str(tmp_path), "--steps", "2", "--samples", "8"]) == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert summary["reward_requests"] == 2 and summary["reward_requests_failed"] == 0  # one request per step
    record = json.loads((tmp_path / "run" / "reward_service.json").read_text())
    assert set(record["versions_used"]) == set(demo.REWARDS)
    png = tmp_path / "run" / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (tmp_path / "reward_service.log").read_text()
    assert "Finished server process" in log  # the demo stopped its service gracefully
