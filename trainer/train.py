"""GRPO on Qwen2.5-VL with rewards from the reward service: ``python -m trainer.train --config configs/NAME.yaml``.

Arguments are TRL's (TrlParser): every ``GRPOConfig`` field and every ``ModelConfig`` field
(``model_name_or_path``, ``dtype``, ``use_peft``, ``lora_*``) may be set in the YAML file or on the
command line (which wins), plus this project's `ODArguments` (data, prompts, reward service,
image resolution, vision freezing, telemetry). The README's "Trainer" section is the reference.

The rewards: one async TRL reward function per configured reward (so TRL logs
``rewards/<name>/mean``), all served by ONE ``POST /v1/score`` per generation batch through
``shared.adapters.trl``. Weights are ``GRPOConfig.reward_weights``. When the service stays
unreachable beyond the client's retry budget the step raises ``RewardServiceError``: training stops
with that message (exit status 3); no reward is made up.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("trainer.train")

REWARD_SERVICE_FILE = "reward_service.json"
ACCURACY = "accuracy"  # the per-line reward (accu_reward_method), see ODArguments.rewards
EXIT_REWARD_SERVICE = 3


@dataclass
class ODArguments:
    """This project's arguments (the rest are TRL's GRPOConfig and ModelConfig)."""

    data_files: str = field(
        default="",
        metadata={"help": "VLM-R1 JSONL training files, several separated by ':'."},
    )
    image_folders: str = field(
        default="",
        metadata={"help": "Image folder of each data file, separated by ':' (one for all is fine)."},
    )
    question_template: str = field(
        default="standard",
        metadata={"help": "Question template of the research: 'standard', 'enhanced' or 'none'."},
    )
    max_samples: int | None = field(default=None, metadata={"help": "Read at most this many training lines."})
    reward_urls: str = field(
        default="http://127.0.0.1:8000",
        metadata={"help": "Reward service base URLs, separated by ','; requests are spread and fail over."},
    )
    rewards: list[str] = field(
        default_factory=lambda: ["format", "od_length"],
        metadata={
            "help": "Rewards, each 'name' or 'name@version' (pinned). 'accuracy' is the per-line reward "
            "named by the line's accu_reward_method (default: --default_accuracy_reward)."
        },
    )
    default_accuracy_reward: str = field(
        default="ap", metadata={"help": "The 'accuracy' reward of lines without an accu_reward_method."}
    )
    reward_params: str | None = field(
        default=None,
        metadata={"help": 'Reward parameters as JSON, e.g. \'{"weighted_sum": {"alpha": 0.7, "gamma": 0.3}}\'.'},
    )
    reward_token: str | None = field(
        default=None, metadata={"help": "Bearer token of the reward service (default: env REWARD_API_TOKEN)."}
    )
    reward_timeout: float = field(default=60.0, metadata={"help": "Seconds per reward request attempt."})
    reward_max_retries: int = field(default=5, metadata={"help": "Retries per reward request before training stops."})
    reward_backoff_base: float = field(default=0.25, metadata={"help": "Backoff base (s), full jitter, doubling."})
    reward_backoff_max: float = field(default=10.0, metadata={"help": "Longest backoff (s) between retries."})
    min_pixels: int = field(default=3136, metadata={"help": "Smallest image area the processor resizes to."})
    max_pixels: int = field(default=12845056, metadata={"help": "Largest image area the processor resizes to."})
    freeze_vision_modules: bool = field(default=False, metadata={"help": "Train the language model only."})
    metrics_port: int | None = field(
        default=None,
        metadata={"help": "Prometheus port of the trainer (env TRAINER_METRICS_PORT, default 9400); 0 disables."},
    )

    def client_settings(self) -> dict:
        """The reward client's retry budget, as the client takes it (and as the run records it)."""
        return {"timeout": self.reward_timeout, "max_retries": self.reward_max_retries,
                "backoff_base": self.reward_backoff_base, "backoff_max": self.reward_backoff_max}

    def token(self) -> str | None:
        # The environment serves containers: compose cannot add a flag only when a secret is set.
        return self.reward_token or os.environ.get("REWARD_API_TOKEN") or None

    def urls(self) -> list[str]:
        return [url.strip() for url in self.reward_urls.split(",") if url.strip()]

    def params(self) -> dict | None:
        if self.reward_params in (None, ""):
            return None
        return self.reward_params if isinstance(self.reward_params, dict) else json.loads(self.reward_params)


def parse_reward(spec: str) -> tuple[str, str | None]:
    """'name' or 'name@version' -> (name, version)."""
    name, _, version = str(spec).partition("@")
    return name.strip(), (version.strip() or None)


def reward_refs(specs: Sequence[str]) -> list[str | dict]:
    refs: list[str | dict] = []
    for spec in specs:
        name, version = parse_reward(spec)
        refs.append({"name": name, "version": version} if version else name)
    return refs


# ----------------------------------------------------------------------------------------------
# Reward functions


def build_reward_functions(
    client: Any,
    specs: Sequence[str],
    params: dict | None,
    accuracy_rewards: Sequence[str] = (),  # the last one: for lines without accu_reward_method
    on_scored: Any = None,
) -> list:
    """TRL reward functions for ``specs``, all from one request per generation batch.

    'accuracy' is the adapter's `PerRowReward`: each line's value is the reward its
    accu_reward_method names (the ``accu_reward`` column), one of ``accuracy_rewards``."""
    from shared.adapters.trl import PerRowReward, make_reward_functions

    rewards: list = []
    for spec, ref in zip(specs, reward_refs(specs)):
        name, version = parse_reward(spec)
        if name != ACCURACY:
            rewards.append(ref)
        elif version is not None:
            raise ValueError(f"{spec!r}: 'accuracy' stands for other rewards and has no version of its own")
        elif not accuracy_rewards:
            raise ValueError("'accuracy' needs at least one reward to stand for")
        else:
            rewards.append(PerRowReward(ACCURACY, "accu_reward", tuple(accuracy_rewards), accuracy_rewards[-1]))
    return make_reward_functions(client, rewards, params=params, on_scored=on_scored)


# ----------------------------------------------------------------------------------------------
# The trainer


def service_trainer_class():
    from trl import GRPOTrainer

    from shared.adapters.trl import completion_text
    from trainer.data import count_boxes

    class ServiceGRPOTrainer(GRPOTrainer):
        """GRPOTrainer that measures the time it waits for rewards and logs boxes per completion."""

        telemetry = None

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            start = time.perf_counter()
            try:
                return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            finally:
                waited = time.perf_counter() - start
                if self.telemetry is not None:
                    self.telemetry.observe_wait(waited)
                self._log_metric("timing/reward_wait_seconds", waited)
                for completion in completions:
                    self._log_metric("completions/boxes_per_completion", count_boxes(completion_text(completion)))

    return ServiceGRPOTrainer


class RunRecord:
    """``reward_service.json`` in the output directory: the service's URLs, its catalogue and
    default settings as it reported them before training, what the run asked for, and the reward
    versions that actually scored it (from the answers)."""

    def __init__(self, path: Path, base: dict) -> None:
        self.path = path
        self.data = dict(base)
        self.data["versions_used"] = {}
        self.data["unscored_samples"] = 0
        self.write()

    def on_scored(self, response: Any) -> None:
        changed = False
        for name, version in response.versions.items():
            if self.data["versions_used"].get(name) != version:
                self.data["versions_used"][name] = version
                changed = True
        unscored = sum(1 for error in response.errors if error is not None)
        if unscored:
            self.data["unscored_samples"] += unscored
            logger.warning("the reward service could not score %d samples: %s", unscored,
                           "; ".join(sorted({e for e in response.errors if e}))[:500])
            changed = True
        if changed:
            self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")


def describe_service(od: ODArguments) -> dict:
    """GET /v1/rewards (with the client's retries): fails before any model is loaded if the service
    is not there, or does not serve a requested reward."""
    from shared.client import RewardClient

    with RewardClient(od.urls(), token=od.token(), **od.client_settings()) as client:
        return client.rewards_catalogue()


def check_rewards(catalogue: dict, names: Sequence[str]) -> None:
    """Refuse unknown reward names early (the service would refuse the first request anyway)."""
    known: set[str] = set()
    for entry in catalogue.get("rewards", []):
        if isinstance(entry, dict):
            known.add(str(entry.get("name")))
            known.update(str(alias) for alias in entry.get("aliases", []) or [])
    missing = [n for n in names if known and n not in known]
    if missing:
        raise SystemExit(f"the reward service does not serve {missing}; it serves {sorted(known)}")


def main(argv: Sequence[str] | None = None) -> int:
    from trl import GRPOConfig, ModelConfig, TrlParser, get_peft_config

    from shared.client import RewardServiceError
    from trainer import data as data_module
    from trainer.model import LANGUAGE_LORA_TARGETS, freeze_vision, load_model, load_processor
    from trainer.telemetry import Telemetry, TelemetryCallback, default_metrics_port, timed_client_class

    parser = TrlParser((ODArguments, GRPOConfig, ModelConfig))
    od, args, model_args = parser.parse_args_and_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not model_args.model_name_or_path:
        raise SystemExit("--model_name_or_path (a local model directory) is required")
    if not od.data_files:
        raise SystemExit("--data_files is required")

    names = [parse_reward(spec)[0] for spec in od.rewards]
    if args.reward_weights is not None and len(args.reward_weights) != len(names):
        raise SystemExit(f"reward_weights has {len(args.reward_weights)} entries for {len(names)} rewards {names}")

    is_main = _is_main_process()
    catalogue = describe_service(od)
    check_rewards(catalogue, [n for n in names if n != ACCURACY])

    processor = load_processor(model_args.model_name_or_path, od.min_pixels, od.max_pixels)
    examples = data_module.read_vlm_r1(od.data_files, od.image_folders, processor.image_processor, od.max_samples)
    dataset = data_module.build_dataset(examples, od.question_template)
    accuracy_rewards = sorted({ex.accu_reward for ex in examples if ex.accu_reward}) + [od.default_accuracy_reward]
    logger.info("%d training samples from %s", len(examples), od.data_files)

    output_dir = Path(args.output_dir)
    params = od.params()
    record = RunRecord(
        output_dir / REWARD_SERVICE_FILE,
        {
            "urls": od.urls(),
            "rewards": list(od.rewards),
            "reward_weights": args.reward_weights,
            "reward_params": params,
            "accuracy_rewards": accuracy_rewards if ACCURACY in names else None,
            "client": od.client_settings(),
            "service": catalogue,
        },
    ) if is_main else None

    port = default_metrics_port() if od.metrics_port is None else od.metrics_port
    telemetry = Telemetry(port if is_main else 0, names)
    client = timed_client_class()(od.urls(), telemetry=telemetry, token=od.token(), **od.client_settings())
    reward_funcs = build_reward_functions(
        client, od.rewards, params, accuracy_rewards, record.on_scored if record else None
    )

    model = load_model(model_args.model_name_or_path, model_args.dtype, model_args.attn_implementation)
    if od.freeze_vision_modules:
        logger.info("vision tower frozen (%d parameters)", freeze_vision(model))
    peft_config = get_peft_config(model_args)
    if peft_config is not None and not model_args.lora_target_modules:
        peft_config.target_modules = LANGUAGE_LORA_TARGETS

    callback = TelemetryCallback(telemetry, args.output_dir, names)
    trainer = service_trainer_class()(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=[callback],
    )
    trainer.telemetry = telemetry
    try:
        trainer.train()
    except RewardServiceError as exc:
        callback.fail(exc)
        print(f"\ntraining stopped: the reward service did not answer.\n{exc}", file=sys.stderr)
        return EXIT_REWARD_SERVICE
    finally:
        telemetry.close()
    trainer.save_model(args.output_dir)
    if is_main:
        processor.save_pretrained(args.output_dir)
        summary = callback.summary()
        logger.info(
            "done: %d steps, %.3f steps/s, reward wait %.2f%% of step time; summary in %s",
            summary["steps"], summary["steps_per_second"] or 0.0, 100 * (summary["reward_wait_share"] or 0.0),
            output_dir / "train_summary.json",
        )
    return 0


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    raise SystemExit(main())
