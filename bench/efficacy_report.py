"""The report of ``bench/efficacy.sh``: ``python -m bench.efficacy_report RUNS --url URL --out DIR``.

Reads each seed's runs (``RUNS/seed<S>/<run>/heldout.jsonl`` and ``heldout_completions.jsonl``, as
`trainer.callbacks.HeldOutEvaluation` writes them; ``sft`` is the start every arm shares) and writes:

* ``results.json``: every held-out round of every run (raw), each arm's final metrics, and the
  paired bootstrap of its final mAP (and AP50) against the SFT start: the same resampled images for
  both, every resample scored by the reward service's ``/v1/evaluate``, a 95% percentile interval;
* ``table.md``: one row per seed and arm;
* ``heldout_map.png``, ``box_ratio.png``: held-out mAP and predicted/ground-truth boxes against
  training time for every run; ``rewards.png``: the GRPO arms' reward means against step.

The metrics are the service's; this module only resamples and draws.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from shared.client import RewardClient
from shared.evaluate import evaluate_images

START = "sft"
LABELS = {
    "sft": "SFT (start)",
    "ap": "(a) GRPO format+ap, beta 0",
    "od_length": "(b) GRPO format+od_length, beta 0",
    "wsum_cosine": "(c) GRPO format+weighted_sum+cosine, beta 0.04",
    "control": "(d) control: SFT continued",
}
COLUMNS = (("heldout/map", "mAP"), ("heldout/ap50", "AP50"), ("heldout/precision", "P"),
           ("heldout/recall", "R"), ("heldout/nms_ap", "NMS-AP"), ("heldout/box_ratio", "boxes/GT"))


def label(run: str) -> str:
    """'ap' -> its description; 'ap@1e-4' (an arm with its own learning rate) -> the same, with the rate."""
    kind, _, lr = run.partition("@")
    return LABELS.get(kind, kind) + (f", lr {lr}" if lr else "")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Scorer:
    """/v1/evaluate from several threads (one client each): a bootstrap is thousands of calls."""

    def __init__(self, url: str, threads: int = 8) -> None:
        self.url = url
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(threads)

    def _client(self) -> RewardClient:
        if not hasattr(self.local, "client"):
            self.local.client = RewardClient([self.url], timeout=600.0)
        return self.local.client

    def metrics(self, images: Sequence[dict], categories: Sequence[str] | None) -> dict:
        return evaluate_images(self._client(), images, categories)

    def many(self, jobs: Sequence[tuple[Sequence[dict], Sequence[str] | None]]) -> list[dict]:
        return list(self.pool.map(lambda job: self.metrics(*job), jobs))


def completions_of(run: Path) -> tuple[list[dict], list[str] | None]:
    """The final round's answers as /v1/evaluate images, and the set's categories."""
    lines = read_jsonl(run / "heldout_completions.jsonl")
    images = [{"completion": line["completion"], "solution": line["solution"]} for line in lines]
    return images, lines[0].get("categories") if lines else None


def paired_bootstrap(scorer: Scorer, start: list[dict], arms: dict[str, list[dict]], categories: list[str] | None,
                     resamples: int, seed: int) -> dict[str, dict[str, list[float]]]:
    """For each resample of the image indices (with replacement), the arm's metric minus the
    start's on the SAME images. Returns {arm: {"map": [...], "ap50": [...]}}."""
    rng = np.random.default_rng(seed)
    n = len(start)
    draws = [rng.integers(0, n, n) for _ in range(resamples)]
    start_scores = scorer.many([([start[i] for i in idx], categories) for idx in draws])
    out: dict[str, dict[str, list[float]]] = {}
    for name, images in arms.items():
        if len(images) != n:
            raise ValueError(f"{name}: {len(images)} held-out answers, the start has {n}")
        scores = scorer.many([([images[i] for i in idx], categories) for idx in draws])
        out[name] = {key: [(a[key] or 0.0) - (b[key] or 0.0) for a, b in zip(scores, start_scores)]
                     for key in ("ap", "ap50")}
    return out


def interval(values: Sequence[float]) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def seed_report(scorer: Scorer, runs: Path, seed: int, arms: Sequence[str], resamples: int) -> dict[str, Any]:
    folder = runs / f"seed{seed}"
    rounds = {name: read_jsonl(folder / name / "heldout.jsonl") for name in [START, *arms]
              if (folder / name / "heldout.jsonl").is_file()}
    start_images, categories = completions_of(folder / START)
    arm_images = {name: completions_of(folder / name)[0] for name in arms if name in rounds}
    differences = paired_bootstrap(scorer, start_images, arm_images, categories, resamples, seed)
    start_final = rounds[START][-1]
    report: dict[str, Any] = {"start": _final(start_final), "arms": {}, "rounds": {}}
    for name, history in rounds.items():
        report["rounds"][name] = [{k: v for k, v in r.items() if k != "evaluate"} for r in history]
    for name in arm_images:
        final = rounds[name][-1]
        summary = _summary(folder / name)
        report["arms"][name] = {
            **_final(final),
            "steps": final["step"],
            "elapsed_seconds": final.get("elapsed"),
            "status": summary.get("status"),
            "map_gain": final.get("heldout/map", 0.0) - start_final.get("heldout/map", 0.0),
            "map_gain_ci95": interval(differences[name]["ap"]),
            "ap50_gain": final.get("heldout/ap50", 0.0) - start_final.get("heldout/ap50", 0.0),
            "ap50_gain_ci95": interval(differences[name]["ap50"]),
            "bootstrap_resamples": resamples,
        }
    return report


def _final(record: dict) -> dict:
    return {key: record.get(key) for key, _ in COLUMNS} | {"n_pred": record["evaluate"]["n_pred"],
                                                           "n_gt": record["evaluate"]["n_gt"]}


def _summary(run: Path) -> dict:
    path = run / "train_summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def table(results: dict) -> str:
    header = ["seed", "run", "steps", *(title for _, title in COLUMNS), "mAP gain [95% CI]", "AP50 gain [95% CI]"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    for seed, report in results["seeds"].items():
        start = report["start"]
        lines.append(f"| {seed} | {LABELS[START]} | | " + " | ".join(
            f"{start[k]:.3f}" if k == "heldout/box_ratio" and start[k] is not None else pct(start[k])
            for k, _ in COLUMNS) + " | | |")
        for name, arm in report["arms"].items():
            cells = [f"{arm[k]:.3f}" if k == "heldout/box_ratio" and arm[k] is not None else pct(arm[k])
                     for k, _ in COLUMNS]
            gain = f"{100 * arm['map_gain']:+.2f} [{100 * arm['map_gain_ci95'][0]:+.2f}, {100 * arm['map_gain_ci95'][1]:+.2f}]"
            gain50 = (f"{100 * arm['ap50_gain']:+.2f} [{100 * arm['ap50_gain_ci95'][0]:+.2f}, "
                      f"{100 * arm['ap50_gain_ci95'][1]:+.2f}]")
            lines.append(f"| {seed} | {label(name)} | {arm['steps']} | " + " | ".join(cells)
                         + f" | {gain} | {gain50} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, runs: Path, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = list(results["seeds"])
    written = []
    for key, title, name in (("heldout/map", "held-out mAP", "heldout_map.png"),
                             ("heldout/box_ratio", "predicted / ground-truth boxes", "box_ratio.png")):
        figure, axes = plt.subplots(1, len(seeds), figsize=(6 * len(seeds), 4), squeeze=False)
        for axis, seed in zip(axes[0], seeds):
            rounds = results["seeds"][seed]["rounds"]
            sft_end = rounds[START][-1].get("elapsed", 0.0) + rounds[START][-1].get("seconds", 0.0)
            for run, history in rounds.items():
                offset = 0.0 if run == START else sft_end  # the arms start where SFT ended
                axis.plot([offset + r.get("elapsed", 0.0) for r in history], [r.get(key) for r in history],
                          marker=".", label=label(run))
            axis.set_title(f"seed {seed}: {title}")
            axis.set_xlabel("training time (s)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        figure.tight_layout()
        written.append(out / name)
        figure.savefig(written[-1], dpi=100)
        plt.close(figure)
    figure, axes = plt.subplots(1, len(seeds), figsize=(6 * len(seeds), 4), squeeze=False)
    for axis, seed in zip(axes[0], seeds):
        for run in results["seeds"][seed]["arms"]:
            history = _summary(runs / f"seed{seed}" / run).get("log_history", [])
            for key in sorted({k for entry in history for k in entry if k.startswith("rewards/") and k.endswith("/mean")}):
                points = [(e["step"], e[key]) for e in history if key in e]
                axis.plot(*zip(*points), label=f"{run}: {key[8:-5]}")
        axis.set_title(f"seed {seed}: GRPO reward means")
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    written.append(out / "rewards.png")
    figure.savefig(written[-1], dpi=100)
    plt.close(figure)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.efficacy_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="the runs folder of bench/efficacy.sh (seed<S>/<run>/...)")
    parser.add_argument("--url", required=True, help="reward service base URL")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--arms", nargs="*", default=[], help="the arms to report (none: the SFT start alone)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples")
    args = parser.parse_args(argv)
    scorer = Scorer(args.url)
    results: dict[str, Any] = {"seeds": {}}
    for seed in args.seeds:
        results["seeds"][str(seed)] = seed_report(scorer, args.runs, seed, args.arms, args.bootstrap)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = table(results)
    (args.out / "table.md").write_text(text)
    print(text)
    for path in plot(results, args.runs, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
