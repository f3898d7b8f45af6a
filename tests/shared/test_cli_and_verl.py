"""The CLI end to end (a real subprocess on a temp JSONL) and the verl adapter, against the service."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.reward_api.local import REPO_ROOT
from shared.adapters import verl
from shared.client import RewardServiceError
from tests.shared.conftest import detection_sample, direct_score
from tests.shared.faulty_server import Reply

UNREADABLE = '<answer>```json\n[{"bbox_2d": [1, 2, 3], "label": "cat"}]\n```</answer>'


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_cli_scores_a_file_in_batches_and_summarises(service, faulty, dead_url, tmp_path):
    samples = [detection_sample(i) for i in range(5)]
    samples[3] = {**samples[3], "solution": UNREADABLE}
    source = write_jsonl(tmp_path / "in.jsonl", [samples[0], samples[1], "", samples[2], samples[3], samples[4]])
    out = tmp_path / "out.jsonl"
    faulty.script("/v1/score", Reply(503, {"detail": "busy"}, {"Retry-After": "0"}))
    done = run_cli("score", str(source), "--url", faulty.url, "--url", dead_url, "--rewards", "ap,format",
                   "--weights", "ap=2,format=1", "--batch-size", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    expected = direct_score(service, samples, rewards=["ap", "format"], weights={"ap": 2, "format": 1})
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"s{i}" for i in range(5)]
    assert [row["rewards"]["ap"] for row in rows] == expected["rewards"]["ap"]
    assert [row["total"] for row in rows] == expected["total"]
    assert rows[3]["error"] and rows[3]["total"] is None and rows[0]["error"] is None
    ap = [v for v in expected["rewards"]["ap"] if v is not None]
    assert f"  ap      mean {sum(ap) / len(ap):.4f}  (4 scored)" in done.stdout
    assert "errors: 1" in done.stdout and "line 5: solution item 0" in done.stdout  # line 3 is blank
    assert all(len(r.json()["samples"]) <= 2 for r in faulty.seen("/v1/score"))


def test_cli_names_every_bad_line(tmp_path, faulty):
    good = detection_sample(0)
    source = write_jsonl(tmp_path / "in.jsonl", [good, "{not json", good, [1, 2], {"completion": "x"}])
    done = run_cli("score", str(source), "--url", faulty.url)
    assert done.returncode == 2
    assert f"{source}:2: not valid JSON" in done.stderr
    assert f"{source}:4: expected a JSON object, got list" in done.stderr
    assert f"{source}:5: solution: Field required" in done.stderr
    assert faulty.seen() == []


def test_cli_reports_a_refused_request_and_a_dead_service(tmp_path, faulty, dead_url):
    source = write_jsonl(tmp_path / "in.jsonl", [detection_sample(0)])
    refused = run_cli("score", str(source), "--url", faulty.url, "--rewards", "no_such_reward")
    assert refused.returncode == 2 and "no_such_reward" in refused.stderr
    dead = run_cli("score", str(source), "--url", dead_url, "--max-retries", "1")
    assert dead.returncode == 1 and "failed after 2 attempts" in dead.stderr and dead_url in dead.stderr
    bad_weight = run_cli("score", str(source), "--url", faulty.url, "--weights", "ap")
    assert bad_weight.returncode == 2 and "'ap' is not name=number" in bad_weight.stderr


@pytest.fixture
def verl_env(monkeypatch, faulty):
    monkeypatch.setenv("REWARD_API_URL", faulty.url)
    monkeypatch.setenv("REWARD_API_REWARDS", "format,ap")
    monkeypatch.setenv("REWARD_API_WEIGHTS", "format=1,ap=2")
    return faulty


def verl_calls(samples: list[dict], infos: list) -> list:
    """verl's reward loop, as far as our function sees it: every sample's call at once on one loop."""
    async def calls():
        return await asyncio.gather(*(verl.compute_score("coco", s["completion"], s["solution"], extra_info=info)
                                      for s, info in zip(samples, infos)), return_exceptions=True)
    return asyncio.run(calls())


def test_verl_compute_score_returns_the_services_total(service, verl_env):
    sample = detection_sample(2)
    [result] = verl_calls([sample], [{"index": 7}])
    expected = direct_score(service, [sample], rewards=["format", "ap"], weights={"format": 1, "ap": 2})
    assert result == {"score": expected["total"][0], "format": expected["rewards"]["format"][0],
                      "ap": expected["rewards"]["ap"][0]}


def test_verl_concurrent_calls_share_a_request_per_configuration_and_keep_order(service, verl_env):
    samples = [detection_sample(i) for i in range(6)]
    infos = [None, {"rewards": ["od_length"]}, {}, {"rewards": ["od_length"]}, None, {}]
    results = verl_calls(samples, infos)
    assert len(verl_env.seen("/v1/score")) == 2  # 6 calls, 2 configurations
    default = direct_score(service, samples, rewards=["format", "ap"], weights={"format": 1, "ap": 2})
    od = direct_score(service, samples, rewards=["od_length"])
    assert [r["score"] for r in results] == [default["total"][0], od["total"][1], default["total"][2],
                                             od["total"][3], default["total"][4], default["total"][5]]
    assert set(results[1]) == {"score", "od_length"}


def test_verl_nested_numpy_ground_truth_and_cosine_tokens(service, verl_env):
    np = pytest.importorskip("numpy")
    sample = detection_sample(1)
    truth = np.array([{"bbox_2d": np.array([10, 10, 50, 60]), "label": np.str_("cat")}], dtype=object)
    async def call():
        return await verl.compute_score("coco", sample["completion"], truth,
                                        extra_info={"completion_tokens": np.int64(21)}, rewards="ap,cosine")
    result = asyncio.run(call())
    expected = direct_score(service, [{**sample, "completion_tokens": 21}], rewards=["ap", "cosine"])
    assert result["ap"] == expected["rewards"]["ap"][0] and result["cosine"] == expected["rewards"]["cosine"][0]


def test_verl_rescales_ground_truth_given_sizes(service, verl_env):
    sample = detection_sample(0)  # its prediction matches [10, 10, 50, 60] in the model's pixels
    original = [{"bbox_2d": [20, 20, 100, 120], "label": "cat"}]  # the same box in a 2x larger image
    async def call(info):
        return await verl.compute_score("coco", sample["completion"], original, extra_info=info, rewards="ap")
    assert asyncio.run(call({"original_size": [200, 240], "input_size": [100, 120]}))["ap"] == pytest.approx(1.0)
    with pytest.warns(UserWarning, match="outside the 60x70 image the model saw"):
        asyncio.run(call({"input_size": [60, 70]}))


def test_verl_refuses_to_make_up_a_score(verl_env):
    [failure] = verl_calls([{"completion": "<answer>None</answer>", "solution": UNREADABLE}], [None])
    assert isinstance(failure, RewardServiceError) and "could not score" in str(failure)


def test_verl_needs_a_url(monkeypatch):
    monkeypatch.delenv("REWARD_API_URL", raising=False)
    [failure] = verl_calls([{"completion": "x", "solution": "None"}], [None])
    assert isinstance(failure, RewardServiceError) and "REWARD_API_URL is not set" in str(failure)
