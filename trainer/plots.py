"""Training curves of a run as a PNG: each reward's mean, completion length, boxes per completion."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.telemetry import SUMMARY_FILE


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Read ``run_dir/train_summary.json`` and write ``training_curves.png`` (or ``out``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    history = json.loads((run / SUMMARY_FILE).read_text())["log_history"]
    if not history:
        raise ValueError(f"{run / SUMMARY_FILE} has no logged step to plot")
    steps = [entry["step"] for entry in history]
    rewards = sorted(
        {
            key[len("rewards/") : -len("/mean")]
            for entry in history
            for key in entry
            if key.startswith("rewards/") and key.endswith("/mean")
        }
    )
    panels = [
        ("reward means", [(name, f"rewards/{name}/mean") for name in rewards]),
        ("completion length (tokens)", [("mean", "completions/mean_length")]),
        ("boxes per completion", [("mean", "completions/boxes_per_completion")]),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for axis, (title, series) in zip(axes, panels):
        for label, key in series:
            axis.plot(steps, [entry.get(key, float("nan")) for entry in history], marker=".", label=label)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if len(series) > 1:
            axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(out) if out else run / "training_curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
