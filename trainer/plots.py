"""Training curves of any run (GRPO or SFT): ``python -m trainer.plots RUN_DIR [--out FILE]``.

Reads the run's log history (``train_summary.json``, else the ``trainer_state.json`` of the run or
of its newest checkpoint) and its held-out rounds (``heldout.jsonl``), and draws one panel per
series that has data: each reward's mean with its standard deviation as a band (one panel per
reward, so that flat series cannot hide each other), the total reward and its std, the loss, the
KL, the completion length, the boxes per completion, the reward wait, the learning rate, the
gradient norm and the held-out metrics. Writes ``RUN_DIR/training_curves.png``; exits 1 with a
message when the run has nothing to draw.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from trainer.callbacks import HELDOUT_FILE
from trainer.telemetry import SUMMARY_FILE

# (title, [(label, key)]) of the panels after the per-reward ones; a panel is drawn if any key has data.
PANELS: tuple[tuple[str, list[tuple[str, str]]], ...] = (
    ("total reward", [("mean", "reward"), ("std", "reward_std")]),
    ("loss", [("loss", "loss")]),
    ("KL to the reference", [("kl", "kl")]),
    (
        "completion length (tokens)",
        [("mean", "completions/mean_length"), ("min", "completions/min_length"), ("max", "completions/max_length")],
    ),
    ("boxes per completion", [("mean", "completions/boxes_per_completion")]),
    ("reward wait (s per batch)", [("wait", "timing/reward_wait_seconds")]),
    ("gradient norm", [("grad_norm", "grad_norm")]),
    ("learning rate", [("lr", "learning_rate")]),
    (
        "held-out detection (%)",
        [
            ("mAP", "heldout/map"),
            ("AP50", "heldout/ap50"),
            ("NMS-AP", "heldout/nms_ap"),
            ("precision", "heldout/precision"),
            ("recall", "heldout/recall"),
        ],
    ),
    ("held-out predicted / true boxes", [("ratio", "heldout/box_ratio")]),
)
PERCENT_KEYS = ("heldout/map", "heldout/ap50", "heldout/nms_ap", "heldout/precision", "heldout/recall")


class NothingToPlot(ValueError):
    """The run folder holds no logged step: the message says what was looked for."""


def read_history(run: Path) -> list[dict]:
    """The run's logged steps (and held-out rounds), oldest first."""
    history: list[dict] = []
    summary = run / SUMMARY_FILE
    if summary.is_file():
        history = list(json.loads(summary.read_text(encoding="utf-8")).get("log_history") or [])
    else:
        states = [
            run / "trainer_state.json",
            *sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1]))[-1:],
        ]
        for state in states:
            if state.is_file():
                history = list(json.loads(state.read_text(encoding="utf-8")).get("log_history") or [])
                break
    heldout = run / HELDOUT_FILE
    if heldout.is_file() and not any(k.startswith("heldout/") for entry in history for k in entry):
        for line in heldout.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                history.append({k: v for k, v in record.items() if k == "step" or k.startswith("heldout/")})
    return sorted((entry for entry in history if "step" in entry), key=lambda entry: entry["step"])


def series(history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    points = [
        (entry["step"], entry[key])
        for entry in history
        if isinstance(entry.get(key), (int, float)) and math.isfinite(entry[key])
    ]
    scale = 100.0 if key in PERCENT_KEYS else 1.0
    return [p[0] for p in points], [p[1] * scale for p in points]


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the run's curves into ``training_curves.png`` (or ``out``); NothingToPlot if none."""
    run = Path(run_dir)
    if not run.is_dir():
        raise NothingToPlot(f"run folder {run} does not exist")
    history = read_history(run)
    rewards = sorted(
        {
            key[len("rewards/") : -len("/mean")]
            for entry in history
            for key in entry
            if key.startswith("rewards/") and key.endswith("/mean")
        }
    )
    panels: list[tuple[str, list[tuple[str, str]], str | None]] = [
        (f"reward {name} (mean ± std)", [("mean", f"rewards/{name}/mean")], f"rewards/{name}/std") for name in rewards
    ]
    panels += [(title, keys, None) for title, keys in PANELS]
    drawn = [(title, keys, band) for title, keys, band in panels if any(series(history, key)[0] for _, key in keys)]
    if not drawn:
        raise NothingToPlot(
            f"{run} has no logged step to draw: no {SUMMARY_FILE}, trainer_state.json or {HELDOUT_FILE} with "
            "metrics (is it a trainer.train or trainer.sft --output_dir? did the run log a step: --logging_steps?)"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(drawn))
    rows = math.ceil(len(drawn) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    for axis, (title, keys, band) in zip(axes.flat, drawn, strict=False):
        for label, key in keys:
            steps, values = series(history, key)
            if steps:
                axis.plot(steps, values, marker=".", label=label)
        if band:
            steps, means = series(history, keys[0][1])
            std_steps, stds = series(history, band)
            if steps and std_steps == steps:
                axis.fill_between(
                    steps,
                    [m - s for m, s in zip(means, stds, strict=True)],
                    [m + s for m, s in zip(means, stds, strict=True)],
                    alpha=0.25,
                    label="± std",
                )
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if len(axis.get_lines()) > 1 or band:
            axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(drawn) :]:
        axis.set_visible(False)
    figure.suptitle(run.name)
    figure.tight_layout()
    path = Path(out) if out else run / "training_curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="od-plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a trainer.train or trainer.sft --output_dir")
    parser.add_argument("--out", default=None, help="PNG to write (default: RUN_DIR/training_curves.png)")
    args = parser.parse_args(argv)
    try:
        path = plot_run(args.run_dir, args.out)
    except NothingToPlot as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"curves: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
