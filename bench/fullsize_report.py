"""The report of ``bench/fullsize.sh``: ``python -m bench.fullsize_report STAGE --out DIR``.

Reads what the script left in its stage folder (``env.json``, ``settings.json``, ``modes.txt``,
``build_<model>.log`` and, per mode, ``<mode>/mode.json``, ``<mode>/run/train_summary.json`` as
`trainer.telemetry.TelemetryCallback` writes it, ``<mode>/gpu_memory.csv`` and ``<mode>/train.log``)
and writes ``DIR/results.json`` (raw) and ``DIR/table.md`` (the README table).
``python -m bench.fullsize_report results.json`` prints the table of a results file again.

Steady numbers leave out each mode's first step (allocations, kernel selection, connection set-up);
with one step only, that step is reported and marked.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GIB = 2**30
MIB_PER_GIB = 1024
LABELS = {
    "full_gc": ("full fine-tuning + gradient checkpointing", "python -m trainer.train"),
    "lora_gc": ("LoRA (r 16, alpha 32) + gradient checkpointing", "python -m trainer.train --use_peft true"),
    "zero2": (
        "DeepSpeed ZeRO-2, full fine-tuning + gradient checkpointing",
        "accelerate launch, zero2.yaml, 1 process",
    ),
    "zero3": (
        "DeepSpeed ZeRO-3, full fine-tuning + gradient checkpointing",
        "accelerate launch, zero3.yaml, 1 process",
    ),
    "qwen3_full_gc": ("full fine-tuning + gradient checkpointing", "python -m trainer.train"),
}
# The model folders bench/fullsize.sh builds, and the preset each was built from (settings.json).
MODEL_PRESETS = {"qwen2_5_vl": "qwen2_5_vl_preset", "qwen3_vl": "qwen3_vl_preset"}
MODEL_NAMES = {"qwen2_5_vl_3b": "Qwen2.5-VL-3B", "qwen3_vl_4b": "Qwen3-VL-4B"}
FAMILY_NAMES = {"qwen2_5_vl": "Qwen2.5-VL", "qwen3_vl": "Qwen3-VL"}
# An exception's last line in a log: "torch.OutOfMemoryError: CUDA out of memory...", "error: ..."
ERROR_LINE = re.compile(r"^(error: |[\w.]*(Error|Exception|Interrupt)\b:?)")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def last_error(log: Path) -> str | None:
    """The last line of ``log`` that looks like an error (an exception's message, ``error: ...``)."""
    if not log.is_file():
        return None
    found = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    errors = [line for line in found if ERROR_LINE.match(line)]
    return errors[-1][:500] if errors else None


def nvidia_smi_peak_gib(samples: Path) -> float | None:
    """The largest memory.used sample (MiB) of ``samples`` in GiB, None without samples."""
    if not samples.is_file():
        return None
    values = [int(line) for line in samples.read_text().split() if line.strip().isdigit()]
    return round(max(values) / MIB_PER_GIB, 2) if values else None


def build_record(log: Path) -> dict:
    """Parameters and seconds of one model build, from ``trainer.tiny_model``'s output."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    parameters = re.search(r"\(([\d,]+) parameters\)", text)
    seconds = re.search(r"^seconds (\d+)", text, re.MULTILINE)
    return {
        "ok": parameters is not None and "FAILED" not in text,
        "parameters": int(parameters[1].replace(",", "")) if parameters else None,
        "seconds": int(seconds[1]) if seconds else None,
        "error": last_error(log),
    }


def status_of(meta: dict, summary: dict | None, max_steps: int | None) -> str:
    """'ok', 'ok (N of M steps: time cap)', 'cut at the time cap after N steps', 'skipped: ...' or 'failed (exit N)'."""
    if meta.get("skipped"):
        return f"skipped: {meta['skipped']}"
    steps = (summary or {}).get("steps", 0)
    rc = meta.get("rc")
    if rc == 0 and summary and summary.get("status") == "completed":
        if max_steps and steps < max_steps:
            return f"ok ({steps} of {max_steps} steps: time cap)"
        return "ok"
    if rc in (124, 137):
        return f"cut at the time cap after {steps} steps" if steps else "timed out before its first step"
    return f"failed (exit {rc})"


def mode_record(stage: Path, mode: str, max_steps: int | None) -> dict:
    folder = stage / mode
    meta = read_json(folder / "mode.json") or {"mode": mode, "rc": None, "skipped": "did not run"}
    summary = read_json(folder / "run" / "train_summary.json")
    per_step = (summary or {}).get("per_step", [])
    steady = per_step[1:] if len(per_step) > 1 else per_step
    seconds = [step["seconds"] for step in steady]
    model = meta.get("model") or ("qwen3_vl" if mode.startswith("qwen3") else "qwen2_5_vl")
    description, launch = LABELS.get(mode, (mode, ""))
    record: dict[str, Any] = {
        "mode": mode,
        "description": description,
        "launch": launch,
        "model": model,
        "status": status_of(meta, summary, max_steps),
        "rc": meta.get("rc"),
        "seconds": meta.get("seconds"),
        "cap_seconds": meta.get("cap_seconds"),
        "steps": len(per_step),
        "steady_steps": len(steady) if len(per_step) > 1 else 0,
        "step_seconds": [round(step["seconds"], 3) for step in per_step],
        "step_seconds_median": round(statistics.median(seconds), 3) if seconds else None,
        "generated_tokens_per_step": (
            statistics.mean(step.get("generated_tokens", 0) for step in steady) if steady else None
        ),
        "generation_tokens_per_second": (summary or {}).get("steady_generation_tokens_per_second"),
        "reward_wait_share": (summary or {}).get("steady_reward_wait_share"),
        "reward_request_seconds_mean": (summary or {}).get("reward_request_seconds_mean"),
        "deepspeed_zero_stage": ((summary or {}).get("setup") or {}).get("deepspeed_zero_stage"),
        "trainable_parameters": ((summary or {}).get("setup") or {}).get("trainable_parameters"),
        "gpu_peak_allocated_gib": gib((summary or {}).get("gpu_peak_allocated_bytes")),
        "gpu_peak_reserved_gib": gib((summary or {}).get("gpu_peak_reserved_bytes")),
        "nvidia_smi_peak_gib": nvidia_smi_peak_gib(folder / "gpu_memory.csv"),
        "error": None,
        "command": meta.get("command"),
        "summary": summary,
    }
    if record["status"].startswith(("failed", "timed out", "skipped")):
        record["error"] = (summary or {}).get("error") or last_error(folder / "train.log") or meta.get("skipped")
    return record


def gib(value: float | None) -> float | None:
    return round(value / GIB, 2) if value else None


def collect(stage: Path) -> dict:
    settings = read_json(stage / "settings.json") or {}
    modes_file = stage / "modes.txt"
    modes = (
        modes_file.read_text().split()
        if modes_file.is_file()
        else sorted(p.parent.name for p in stage.glob("*/mode.json"))
    )
    return {
        "machine": read_json(stage / "env.json") or {},
        "settings": settings,
        "builds": {path.stem.removeprefix("build_"): build_record(path) for path in sorted(stage.glob("build_*.log"))},
        "modes": [mode_record(stage, mode, settings.get("max_steps")) for mode in modes],
    }


def model_name(results: dict, folder: str) -> str:
    """'Qwen2.5-VL-3B (3.75B)' for a model folder of the run; 'tiny Qwen3-VL (0.3M)' in a smoke run."""
    preset = results.get("settings", {}).get(MODEL_PRESETS.get(folder, ""), "")
    name = MODEL_NAMES.get(preset) or f"{preset} {FAMILY_NAMES.get(folder, folder)}".strip()
    parameters = results.get("builds", {}).get(folder, {}).get("parameters")
    return f"{name} ({count(parameters)})" if parameters else name


def count(value: float | None) -> str:
    """1.2B, 33M, 0.3M: parameter counts for the table."""
    if value is None:
        return "-"
    return f"{value / 1e9:.2f}B" if value >= 1e9 else f"{value / 1e6:.3g}M"


def number(value: float | None, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}{suffix}"


def table(results: dict) -> str:
    """The README's table (markdown) of ``results``, with a line saying what was measured on what."""
    machine, settings = results.get("machine", {}), results.get("settings", {})
    versions = ", ".join(
        f"{name} {machine[name]}" for name in ("torch", "transformers", "trl", "peft", "deepspeed") if machine.get(name)
    )
    smoke = "A SMOKE RUN of the harness (tiny models; no claim). " if settings.get("smoke") else ""
    lines = [
        f"{smoke}Measured on {machine.get('gpu') or machine.get('device', '?')} ({versions}): "
        f"`{settings.get('recipe', '?')}` with completions of at most {settings.get('max_completion_length', '?')} "
        f"tokens, attention {settings.get('attn_implementation', '?')}, images of "
        f"{settings.get('image_sizes', '?')}, up to {settings.get('max_steps', '?')} steps per mode.",
        "",
        "| model | mode | status | steps | trainable parameters | step time, s (steady) | generation, tokens/s "
        "| reward wait, % of step | peak GPU memory, GiB: allocated / reserved / nvidia-smi |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in results.get("modes", []):
        status = mode["status"] + (f": {mode['error']}" if mode.get("error") else "")
        if mode.get("deepspeed_zero_stage") is not None:
            status += f" (ZeRO stage {mode['deepspeed_zero_stage']} in use)"
        step = number(mode["step_seconds_median"], 2) + ("" if mode["steady_steps"] else " (first step only)")
        memory = " / ".join(
            number(mode[key], 1) for key in ("gpu_peak_allocated_gib", "gpu_peak_reserved_gib", "nvidia_smi_peak_gib")
        )
        cells = [
            model_name(results, mode["model"]),
            f"{mode['description']} (`{mode['launch']}`)" if mode["launch"] else mode["description"],
            status.replace("|", "/"),
            str(mode["steps"]),
            count(mode.get("trainable_parameters")),
            step,
            number(mode["generation_tokens_per_second"], 0),
            number(mode["reward_wait_share"], 2, 100),
            memory,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fullsize_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="bench/fullsize.sh's stage folder, or a results.json to render")
    parser.add_argument("--out", type=Path, default=None, help="where results.json and table.md go (a stage folder)")
    args = parser.parse_args(argv)
    if args.source.is_file():
        print(table(json.loads(args.source.read_text(encoding="utf-8"))), end="")
        return 0
    if not args.source.is_dir():
        parser.error(f"{args.source} is neither a stage folder nor a results.json")
    results = collect(args.source)
    out = args.out or args.source
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    rendered = table(results)
    (out / "table.md").write_text(rendered, encoding="utf-8")
    print(rendered, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
