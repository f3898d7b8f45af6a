"""``make demo``: the whole loop on CPU in a few minutes.

Builds the tiny Qwen2.5-VL and a synthetic detection set, starts the reward service on a free
loopback port, trains with GRPO for a few dozen steps with every reward from the service over HTTP,
writes the training curves to ``runs/demo/run/training_curves.png`` and stops the service.
The service runs on its defaults: REWARD_API_* variables of the shell do not reach it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from services.reward_api.local import LocalService

REWARDS = ["format", "od_length", "weighted_sum", "cosine", "repetition"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args(argv)

    from trainer import plots, synthetic, tiny_model, train

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    print(f"building the tiny model and {args.samples} synthetic images in {root}")
    model_dir = tiny_model.build(root / "tiny_model")
    synthetic.generate(root / "data", args.samples)
    print(f"starting the reward service (log: {root / 'reward_service.log'})")
    service = LocalService.start(log_path=root / "reward_service.log", timeout=90)
    print(f"reward service ready at {service.url}")
    run_dir = root / "run"
    try:
        status = train.main(
            [
                "--model_name_or_path",
                str(model_dir),
                "--data_files",
                str(root / "data" / "train.jsonl"),
                "--image_folders",
                str(root / "data" / "images"),
                "--reward_urls",
                service.url,
                "--rewards",
                *REWARDS,
                "--reward_weights",
                "1",
                "1",
                "0",
                "1",
                "1",
                "--output_dir",
                str(run_dir),
                "--max_steps",
                str(args.steps),
                "--per_device_train_batch_size",
                "8",
                "--num_generations",
                "4",
                "--max_completion_length",
                "32",
                "--learning_rate",
                "0.003",
                "--logging_steps",
                "1",
                "--save_strategy",
                "no",
                "--report_to",
                "none",
                "--use_cpu",
                "true",
                "--seed",
                "0",
                "--metrics_port",
                os.environ.get("TRAINER_METRICS_PORT", "0"),
            ]
        )
    finally:
        service.stop()
        print("reward service stopped")
    if status != 0:
        return status
    png = plots.plot_run(run_dir)
    print(f"training curves: {png}\nsummary: {run_dir / 'train_summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
