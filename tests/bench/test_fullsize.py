"""bench/fullsize.sh (the 3B recipes at full size on one GPU) run as a whole on the CPU with the tiny
preset, and its report (bench/fullsize_report.py) on the stage folders of runs that went each way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from bench import fullsize_report
from services.reward_api.local import REPO_ROOT, free_port


def test_the_harness_measures_a_mode_end_to_end_on_the_cpu(tmp_path):
    """The GPU command's every step on the tiny preset (build, data, service, a GRPO mode through
    the recipe, the report, the archive), so that the GPU call cannot fail on a typo."""
    out = tmp_path / "out"
    env = dict(os.environ, FULLSIZE_SMOKE="1", DEVICE="cpu", OUT=str(out), MODES="full_gc no_such_mode",
               PORT=str(free_port()), WORKERS="1", OMP_NUM_THREADS="1", PYTHON=sys.executable)
    done = subprocess.run(["bash", "bench/fullsize.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["fullsize.log", "fullsize_logs.tar.gz", "results.json", "table.md"]
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["smoke"] == "1" and results["machine"]["missing"] == []
    assert results["builds"]["qwen2_5_vl"]["parameters"] > 0
    full, unknown = results["modes"]
    assert (full["mode"], full["status"], full["steps"], full["steady_steps"]) == ("full_gc", "ok", 2, 1)
    assert full["step_seconds_median"] > 0 and full["generation_tokens_per_second"] > 0
    assert 0 < full["reward_wait_share"] < 1 and full["gpu_peak_allocated_gib"] is None  # no GPU here
    setup = full["summary"]["setup"]
    assert setup["gradient_checkpointing"] and not setup["peft"] and setup["deepspeed_zero_stage"] is None
    assert unknown["status"] == "skipped: unknown mode"
    table = (out / "table.md").read_text()
    assert table.startswith("A SMOKE RUN") and table.count("\n| ") == 3  # header and two modes
    with tarfile.open(out / "fullsize_logs.tar.gz") as archive:
        names = archive.getnames()
    assert "./full_gc/train.log" in names and "./full_gc/run/train_summary.json" in names
    assert not [name for name in names if name.endswith(".safetensors")], "--save_final_model false saved weights"


def write(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def summary(steps: int, status: str = "completed", error: str | None = None) -> dict:
    per_step = [{"step": i + 1, "seconds": 10.0 + (5 if i == 0 else i), "reward_wait_seconds": 0.01,
                 "generation_seconds": 4.0, "generated_tokens": 4096} for i in range(steps)]
    return {"status": status, "error": error, "steps": steps, "per_step": per_step,
            "steady_generation_tokens_per_second": 1024.0, "steady_reward_wait_share": 0.001,
            "gpu_peak_allocated_bytes": 40 * 2**30, "gpu_peak_reserved_bytes": 50 * 2**30,
            "setup": {"deepspeed_zero_stage": 2, "trainable_parameters": 3_754_622_976}}


def test_the_report_tells_each_mode_apart_and_renders_the_readme_table(tmp_path, capsys):
    stage = tmp_path / "stage"
    write(stage / "env.json", {"gpu": "NVIDIA H200", "torch": "2.11.0", "deepspeed": "0.19.8"})
    write(stage / "settings.json", {"recipe": "configs/r.yaml", "max_completion_length": 256, "max_steps": 4,
                                    "qwen2_5_vl_preset": "qwen2_5_vl_3b"})
    write(stage / "build_qwen2_5_vl.log",
          "qwen2_5_vl_3b qwen2_5_vl (3,754,622,976 parameters) written to x\nseconds 21\n")
    write(stage / "modes.txt", "zero2\nfull_gc\nlora_gc\nzero3\n")
    write(stage / "zero2" / "mode.json", {"mode": "zero2", "rc": 0, "seconds": 80, "model": "qwen2_5_vl"})
    write(stage / "zero2" / "run" / "train_summary.json", summary(4))
    write(stage / "zero2" / "gpu_memory.csv", "0\n52000\n61440\n\n")
    write(stage / "full_gc" / "mode.json", {"mode": "full_gc", "rc": 124, "seconds": 70, "model": "qwen2_5_vl"})
    write(stage / "full_gc" / "run" / "train_summary.json", summary(3, "failed", "KeyboardInterrupt: "))
    write(stage / "lora_gc" / "mode.json", {"mode": "lora_gc", "rc": 1, "seconds": 30, "model": "qwen2_5_vl"})
    write(stage / "lora_gc" / "train.log", "Traceback (most recent call last):\n  ...\n"
          "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    write(stage / "zero3" / "mode.json", {"mode": "zero3", "rc": None, "skipped": "no time left in the budget"})

    assert fullsize_report.main([str(stage), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    zero2, full, lora, zero3 = results["modes"]
    assert zero2["status"] == "ok" and zero2["error"] is None and zero2["nvidia_smi_peak_gib"] == 60.0
    assert zero2["step_seconds_median"] == 12.0 and zero2["steady_steps"] == 3  # the first step left out
    assert zero2["gpu_peak_allocated_gib"] == 40.0 and zero2["deepspeed_zero_stage"] == 2
    assert full["status"] == "cut at the time cap after 3 steps" and full["error"] is None
    assert lora["status"] == "failed (exit 1)"
    assert lora["error"].startswith("torch.OutOfMemoryError: CUDA out of memory")
    assert zero3["status"] == "skipped: no time left in the budget"
    table = (tmp_path / "out" / "table.md").read_text()
    assert "Measured on NVIDIA H200 (torch 2.11.0, deepspeed 0.19.8)" in table
    assert "| Qwen2.5-VL-3B (3.75B) | DeepSpeed ZeRO-2" in table and "(ZeRO stage 2 in use)" in table
    assert "| 40.0 / 50.0 / 60.0 |" in table and "CUDA out of memory" in table
    capsys.readouterr()
    assert fullsize_report.main([str(tmp_path / "out" / "results.json")]) == 0  # rendered again, for the README
    assert capsys.readouterr().out == table
