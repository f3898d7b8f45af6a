"""``make demo``: the whole loop on CPU in a few minutes.

Builds the tiny Qwen2.5-VL and a synthetic detection set, starts the reward service on a free
loopback port, trains with GRPO for a few dozen steps with every reward from the service over HTTP,
writes the training curves to ``runs/demo/run/training_curves.png`` and stops the service.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

REWARDS = ["format", "od_length", "weighted_sum", "cosine", "repetition"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(port: int, log_path: Path, workers: int = 1, timeout: float = 90.0) -> subprocess.Popen:
    """``python -m services.reward_api`` on 127.0.0.1:port; returns once /readyz answers 200."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.reward_api", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the reward service exited ({process.returncode}); see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_service(process)
    raise RuntimeError(f"the reward service was not ready after {timeout:.0f} s; see {log_path}")


def stop_service(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


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
    port = free_port()
    print(f"starting the reward service on 127.0.0.1:{port} (log: {root / 'reward_service.log'})")
    service = start_service(port, root / "reward_service.log")
    run_dir = root / "run"
    try:
        status = train.main([
            "--model_name_or_path", str(model_dir),
            "--data_files", str(root / "data" / "train.jsonl"),
            "--image_folders", str(root / "data" / "images"),
            "--reward_urls", f"http://127.0.0.1:{port}",
            "--rewards", *REWARDS,
            "--reward_weights", "1", "1", "0", "1", "1",
            "--output_dir", str(run_dir),
            "--max_steps", str(args.steps),
            "--per_device_train_batch_size", "8",
            "--num_generations", "4",
            "--max_completion_length", "32",
            "--learning_rate", "0.003",
            "--logging_steps", "1",
            "--save_strategy", "no",
            "--report_to", "none",
            "--use_cpu", "true",
            "--seed", "0",
            "--metrics_port", os.environ.get("TRAINER_METRICS_PORT", "0"),
        ])
    finally:
        stop_service(service)
        print("reward service stopped")
    if status != 0:
        return status
    png = plots.plot_run(run_dir)
    print(f"training curves: {png}\nsummary: {run_dir / 'train_summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
