"""bench/efficacy.sh (SFT, then GRPO arms and an SFT control, on one GPU) run as a whole on the CPU
with its SMOKE sizes, so that the GPU calls cannot fail on a typo (no efficacy claim)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

from services.reward_api.local import REPO_ROOT, free_port


def test_the_whole_pipeline_runs_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, DEVICE="cpu", SMOKE="1", SEEDS="0", VISION_LR="1e-4", OUT=str(out),
               PORT=str(free_port()), WORKERS="1", OMP_NUM_THREADS="1", PYTHON=sys.executable)  # fmt: skip
    done = subprocess.run(["bash", "bench/efficacy.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=800)  # fmt: skip  # under pytest's own 900 s, so the output shows
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "seed 0 vision probe: {" in done.stdout
    assert {"results.json", "table.md", "runs.tar.gz", "heldout_map.png"} <= {p.name for p in out.iterdir()}
    seed = json.loads((out / "results.json").read_text())["seeds"]["0"]
    assert set(seed["arms"]) == {"ap", "od_length", "wsum_cosine", "control"}
    with tarfile.open(out / "runs.tar.gz") as archive:
        names = archive.getnames()
        probe = json.load(archive.extractfile("./seed0/sft/vision_probe.json"))
    assert "./seed0/ap/heldout.jsonl" in names and probe["samples"] > 1
