"""GRPO on Qwen2.5-VL with rewards from the reward service: ``python -m trainer.train --config configs/NAME.yaml``.

Arguments are TRL's (TrlParser): every ``GRPOConfig`` field and every ``ModelConfig`` field
(``model_name_or_path``, ``dtype``, ``use_peft``, ``lora_*``) may be set in the YAML file or on the
command line (which wins), plus this project's `ODArguments` (data, prompts, reward service,
image resolution, vision freezing, telemetry). The README's "Trainer" section is the reference.

The rewards: one async TRL reward function per configured reward (so TRL logs
``rewards/<name>/mean``), all served by ONE ``POST /v1/score`` per generation batch through
``shared.adapters.trl``. Weights are ``GRPOConfig.reward_weights``. When the service stays
unreachable beyond the client's retry budget the step raises ``RewardServiceError``: training stops
with that message (exit status 3); no reward is made up, and the run resumes from its last
checkpoint with ``--resume_from_checkpoint`` (a path, or ``last``).

User mistakes end with one line and an exit code of `trainer.errors` (the README's table).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import (
    EXIT_REWARD_SERVICE,
    EXIT_SERVICE_AT_START,
    EXIT_STOPPED,
    UserError,
    offline_by_default,
    quiet_logs,
    run_command,
)
from trainer.options import DataArguments, HeldOutArguments, ServiceArguments, VisionArguments

offline_by_default()  # before transformers is imported: a missing model folder fails at once

logger = logging.getLogger("trainer.train")

REWARD_SERVICE_FILE = "reward_service.json"
ACCURACY = "accuracy"  # the per-line reward (accu_reward_method), see ODArguments.rewards
DEFAULT_ATTENTION = "eager"
LAST_CHECKPOINT = ("last", "latest", "true")  # --resume_from_checkpoint values meaning the newest one


@dataclass
class ODArguments(DataArguments, ServiceArguments, HeldOutArguments, VisionArguments):
    """This project's GRPO arguments (the rest are TRL's GRPOConfig and ModelConfig)."""

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
    metrics_port: int | None = field(
        default=None,
        metadata={"help": "Prometheus port of the trainer (env TRAINER_METRICS_PORT, default 9400); 0 disables."},
    )
    save_final_model: bool = field(
        default=True,
        metadata={
            "help": "Save the model and processor to output_dir at the end (false: measurements, or runs whose "
            "checkpoints suffice; a 3B model is 7.5 GB)."
        },
    )

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
    for spec, ref in zip(specs, reward_refs(specs), strict=True):
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


def with_batch_metrics(reward_function: Any, telemetry: Any = None) -> Any:
    """``reward_function`` that also reports, through TRL's public ``log_metric`` hook, how long the
    batch waited for its rewards (``timing/reward_wait_seconds``) and how many boxes the
    completions list (``completions/boxes_per_completion``). Wrap ONE of the functions: they all
    share one request, which TRL awaits concurrently, so one measures the batch's wait."""
    import functools

    from shared.adapters.trl import completion_text
    from trainer.data import count_boxes

    @functools.wraps(reward_function)
    async def measured(*args: Any, **kwargs: Any) -> list:
        started = time.perf_counter()
        values = await reward_function(*args, **kwargs)
        waited = time.perf_counter() - started
        if telemetry is not None:
            telemetry.observe_wait(waited)
        log_metric = kwargs.get("log_metric")
        completions = kwargs.get("completions") or []
        if log_metric is not None:
            log_metric("timing/reward_wait_seconds", waited)
            if completions:
                boxes = sum(count_boxes(completion_text(c)) for c in completions) / len(completions)
                log_metric("completions/boxes_per_completion", boxes)
        return values

    return measured


# ----------------------------------------------------------------------------------------------
# The run


class RunRecord:
    """``reward_service.json`` in the output directory: the service's URLs, its catalogue and
    default settings as it reported them before training, what the run asked for, and the reward
    versions that actually scored it (from the answers)."""

    def __init__(self, path: Path, base: dict, previous: dict | None = None) -> None:
        self.path = path
        self.data = dict(base)
        # A resumed run goes on with what scored it so far (checked by check_resumed_versions).
        self.data["versions_used"] = dict((previous or {}).get("versions_used", {}))
        self.data["unscored_samples"] = int((previous or {}).get("unscored_samples", 0))
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
            logger.warning(
                "the reward service could not score %d samples: %s",
                unscored,
                "; ".join(sorted({e for e in response.errors if e}))[:500],
            )
            changed = True
        if changed:
            self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")


def describe_service(od: ServiceArguments) -> dict:
    """GET /v1/rewards (with the client's retries): fails before any model is loaded if the service
    is not there, refuses the token, or does not answer like a reward service."""
    from shared.client import RewardClient
    from trainer.errors import reward_catalogue

    with RewardClient(od.urls(), token=od.token(), **od.client_settings()) as client:
        return reward_catalogue(client, od.urls())


def check_rewards(catalogue: dict, names: Sequence[str]) -> None:
    """Refuse unknown reward names early (the service would refuse the first request anyway)."""
    known: set[str] = set()
    for entry in catalogue.get("rewards", []):
        if isinstance(entry, dict):
            known.add(str(entry.get("name")))
            known.update(str(alias) for alias in entry.get("aliases", []) or [])
    missing = [n for n in names if known and n not in known]
    if missing:
        raise UserError(
            f"the reward service does not serve {missing}; it serves {sorted(known)}: fix --rewards",
            EXIT_SERVICE_AT_START,
        )


def resume_checkpoint(requested: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint folder ``--resume_from_checkpoint`` names: a path, or ``last`` for the newest
    ``checkpoint-N`` of ``output_dir``; UserError when there is none."""
    if requested in (None, "", "false", "False"):
        return None
    if str(requested).lower() in LAST_CHECKPOINT:
        from transformers.trainer_utils import get_last_checkpoint

        found = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
        if found is None:
            raise UserError(
                f"--resume_from_checkpoint {requested}: {output_dir} holds no checkpoint-N folder "
                "(was --save_steps reached? give the checkpoint's path)"
            )
        return Path(found)
    path = Path(requested)
    if not (path / "trainer_state.json").is_file():
        raise UserError(
            f"checkpoint {path} does not exist or is not a Trainer checkpoint (no trainer_state.json): "
            f"give a checkpoint-N folder of a run's --output_dir, or 'last'"
        )
    return path


def recorded_service(checkpoint: Path) -> dict | None:
    """The reward_service.json saved with ``checkpoint`` (or its run's), None if neither exists."""
    for folder in (checkpoint, checkpoint.parent):
        path = folder / REWARD_SERVICE_FILE
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def check_resumed_versions(recorded: dict | None, catalogue: dict, specs: Sequence[str]) -> None:
    """Refuse to resume when a reward that scored the run so far would now be scored by another
    version: a pinned version the service no longer serves, or an unpinned name whose default moved."""
    if not recorded:
        return
    pinned = {name: version for name, version in map(parse_reward, specs) if version}
    entries = {str(e.get("name")): e for e in catalogue.get("rewards", []) if isinstance(e, dict)}
    changed = []
    for name, used in (recorded.get("versions_used") or {}).items():
        entry = entries.get(name)
        if entry is None:
            changed.append(f"{name} (version {used}) is no longer served")
            continue
        now = pinned.get(name, entry.get("default_version"))
        if str(now) != str(used):
            changed.append(f"{name} was scored with version {used}, the service would now use version {now}")
        elif name in pinned and str(now) not in {str(v) for v in entry.get("versions", {}) or {now: None}}:
            changed.append(f"{name}@{now} is no longer served")
    if changed:
        pins = " ".join(f"{n}@{v}" for n, v in (recorded.get("versions_used") or {}).items())
        raise UserError(
            "cannot resume: the reward service changed since the checkpoint: "
            + "; ".join(changed)
            + f". Resume with the versions pinned (--rewards {pins}), or start a new run",
            EXIT_SERVICE_AT_START,
        )


def tie_cosine_length(params: dict | None, specs: Sequence[str], max_completion_length: int | None) -> dict | None:
    """cosine's ``max_length`` is the run's ``max_completion_length`` unless reward_params sets it
    (its default, 1,024 tokens, gives no signal to a run whose completions stop at 32).

    >>> tie_cosine_length(None, ["format", "cosine"], 32)
    {'cosine': {'max_length': 32}}
    >>> tie_cosine_length({"cosine": {"max_length": 512}}, ["cosine"], 32)
    {'cosine': {'max_length': 512}}
    >>> tie_cosine_length(None, ["format"], 32) is None
    True
    """
    if max_completion_length is None or "cosine" not in {parse_reward(spec)[0] for spec in specs}:
        return params
    out = {name: dict(values) for name, values in (params or {}).items()}
    out.setdefault("cosine", {}).setdefault("max_length", int(max_completion_length))
    return out


def parse_arguments(argv: Sequence[str] | None) -> tuple[ODArguments, Any, Any]:
    from trl import GRPOConfig

    from trainer.options import parse_run_arguments

    od, args, model_args = parse_run_arguments(ODArguments, GRPOConfig, "od-train", __doc__.split("\n\n")[0], argv)
    names = [parse_reward(spec)[0] for spec in od.rewards]
    if args.reward_weights is not None and len(args.reward_weights) != len(names):
        raise UserError(f"reward_weights has {len(args.reward_weights)} entries for {len(names)} rewards {names}")
    try:
        od.params()
    except json.JSONDecodeError as exc:
        raise UserError(f'--reward_params is not JSON ({exc}): e.g. \'{{"cosine": {{"max_length": 256}}}}\'') from None
    if model_args.attn_implementation is None:
        # sdpa (the default) gave NaN gradients at the first GRPO step in bf16 on CUDA, with
        # left-padded prompts; eager attention trained. Ask for sdpa or flash_attention_2 explicitly.
        model_args.attn_implementation = DEFAULT_ATTENTION
    return od, args, model_args


def coordinates_of(model_path: str) -> str:
    from trainer import data as data_module

    try:
        return data_module.coordinate_convention(model_path)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def load_training_data(od: DataArguments, processor: Any, coordinates: str) -> tuple[list, Any]:
    """(examples, the GRPO dataset) read with the project's one VLM-R1 reader, ground truth in the
    model's ``coordinates`` (`trainer.data.coordinate_convention`)."""
    from trainer import data as data_module

    examples = data_module.read_vlm_r1(
        od.data_files, od.image_folders, processor.image_processor, od.max_samples, coordinates
    )
    logger.info("%d training samples from %s", len(examples), od.data_files)
    return examples, data_module.build_dataset(examples, od.question_template)


def full_weights(checkpoint: Path | None) -> bool:
    """Whether ``checkpoint`` holds a whole model in the from_pretrained layout (not LoRA adapters
    alone, nor DeepSpeed ZeRO shards without gathered weights: Trainer resumes those itself)."""
    if checkpoint is None or not (checkpoint / "config.json").is_file():
        return False
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    return any((checkpoint / name).is_file() for name in names)


def prepare_model(
    model_args: Any, args: Any, freeze_vision_modules: bool, resume: Path | None = None
) -> tuple[Any, Any]:
    """(model, peft config or None). Resuming full fine-tuning, the weights are the checkpoint's,
    loaded here (see `load_weights_here`); LoRA adapters are loaded by Trainer on the base model. A
    full fine-tune keeps float32 master weights (`trainer.model.master_weights_dtype`); the KL
    reference model TRL builds is brought back to the requested dtype (`prepare_reference_model`)."""
    from trl import get_peft_config

    from trainer.model import LANGUAGE_LORA_TARGETS, freeze_vision, load_model, master_weights_dtype

    peft_config = get_peft_config(model_args)
    dtype = master_weights_dtype(
        model_args.dtype, args, full_fine_tuning=peft_config is None, model_path=model_args.model_name_or_path
    )
    source = resume if full_weights(resume) else model_args.model_name_or_path
    model = load_model(str(source), dtype, model_args.attn_implementation)
    if freeze_vision_modules:
        logger.info("vision tower frozen (%d parameters)", freeze_vision(model))
    if peft_config is not None and not model_args.lora_target_modules:
        peft_config.target_modules = LANGUAGE_LORA_TARGETS  # type: ignore[attr-defined]  # a LoraConfig here
    return model, peft_config


def load_weights_here(trainer: Any, resume: Path | None) -> None:
    """Resuming a full fine-tune, Trainer would reload the checkpoint's weights with a plain
    ``load_state_dict(strict=False)``; transformers 5 saves Qwen-VL weights under the published
    checkpoint's key names (``visual.*``, ``model.layers.*``), which match none of the model's
    (``model.visual.*``...), so every weight would silently stay as initialised. The model was
    loaded from the checkpoint with ``from_pretrained`` instead (`prepare_model`), which maps the
    names; Trainer still restores the optimizer, scheduler, RNG, step and data position."""
    if full_weights(resume) and not trainer.is_deepspeed_enabled and not trainer.is_fsdp_enabled:
        trainer._load_from_checkpoint = lambda resume_from_checkpoint, model=None: None


@contextlib.contextmanager
def interrupted_by_sigterm(hold: Callable[[str], bool] | None = None) -> Iterator[None]:
    """SIGTERM (a scheduler stopping the job, ``docker stop``, ``timeout``) interrupts training as
    Ctrl-C does, with a KeyboardInterrupt, instead of ending the process on the spot: the run's
    record of the steps so far is written first (`run_training`). ``hold(message)`` may take the
    interrupt over and raise it a moment later (`TelemetryCallback.interrupt_after_log`)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    fired = False

    def interrupt(signum: int, _frame: Any) -> None:
        nonlocal fired
        fired = True
        # A second SIGTERM (a launcher passing the first one on) must not cut the record short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        message = f"stopped by signal {signal.Signals(signum).name}"
        if hold is None or not hold(message):
            raise KeyboardInterrupt(message)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        if not fired:  # once fired, the process is on its way out, writing its record
            signal.signal(signal.SIGTERM, previous)


def run_training(trainer: Any, summary: Any, resume: Path | None = None) -> int:
    """``trainer.train()`` (from ``resume``, a checkpoint: model, optimizer, scheduler, RNG, step and
    data position) with a record whatever happens: a run that fails for any reason, or is stopped
    by Ctrl-C or SIGTERM, writes ``train_summary.json`` with status ``failed`` and the error before
    the error propagates."""
    from shared.client import RewardServiceError
    from trainer.callbacks import TrainingStopped

    try:
        with interrupted_by_sigterm(summary.interrupt_after_log):
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except RewardServiceError as exc:
        summary.fail(exc)
        print(
            f"\ntraining stopped: the reward service did not answer.\n{exc}\nOnce it answers again, resume "
            "with --resume_from_checkpoint last (checkpoints every --save_steps).",
            file=sys.stderr,
        )
        return EXIT_REWARD_SERVICE
    except TrainingStopped as exc:
        summary.fail(exc)
        print(f"\ntraining stopped: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except BaseException as exc:
        summary.fail(exc)
        raise
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    from trl import GRPOTrainer

    from trainer.callbacks import CheckpointRecord, NonFiniteGuard, TimeLimit
    from trainer.model import (
        load_processor,
        loaded_dtype,
        model_type,
        prepare_reference_model,
        save_processor,
        train_vision_at,
    )
    from trainer.options import heldout_callback
    from trainer.telemetry import (
        Telemetry,
        TelemetryCallback,
        default_metrics_port,
        run_setup,
        timed_client_class,
        timed_generation,
    )

    od, args, model_args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_logs()
    resume = resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    names = [parse_reward(spec)[0] for spec in od.rewards]
    is_main = _is_main_process()
    catalogue = describe_service(od)
    check_rewards(catalogue, [n for n in names if n != ACCURACY])
    previous = recorded_service(resume) if resume else None
    check_resumed_versions(previous, catalogue, od.rewards)
    coordinates = coordinates_of(model_args.model_name_or_path)

    # Left padding: see load_processor. The resize bounds are the model's unless given.
    processor = load_processor(model_args.model_name_or_path, od.min_pixels, od.max_pixels, padding_side="left")
    examples, dataset = load_training_data(od, processor, coordinates)
    accuracy_rewards = [*sorted({ex.accu_reward for ex in examples if ex.accu_reward}), od.default_accuracy_reward]

    output_dir = Path(args.output_dir)
    params = tie_cosine_length(od.params(), od.rewards, args.max_completion_length)
    record = (
        RunRecord(
            output_dir / REWARD_SERVICE_FILE,
            {
                "urls": od.urls(),
                "rewards": list(od.rewards),
                "reward_weights": args.reward_weights,
                "reward_params": params,
                "accuracy_rewards": accuracy_rewards if ACCURACY in names else None,
                "coordinates": coordinates,
                "client": od.client_settings(),
                "service": catalogue,
                "resumed_from": str(resume) if resume else None,
            },
            previous,
        )
        if is_main
        else None
    )

    port = default_metrics_port() if od.metrics_port is None else od.metrics_port
    telemetry = Telemetry(port if is_main else 0, names)
    client = timed_client_class()(od.urls(), telemetry=telemetry, token=od.token(), **od.client_settings())
    reward_funcs = build_reward_functions(
        client, od.rewards, params, accuracy_rewards, record.on_scored if record else None
    )
    reward_funcs[0] = with_batch_metrics(reward_funcs[0], telemetry)
    model, peft_config = prepare_model(model_args, args, od.freeze_vision_modules, resume)

    summary = TelemetryCallback(telemetry, args.output_dir, names)
    callbacks = [summary, NonFiniteGuard(), TimeLimit(od.max_seconds)]
    if record is not None:
        callbacks.append(CheckpointRecord(record.path))
    heldout = heldout_callback(od, processor, args.output_dir, od.question_template, coordinates)
    if heldout is not None:
        # Before the summary: its last round is in train_summary.json, and its rounds (run in
        # on_step_end) come before the summary holds a SIGTERM for the step's log entry.
        callbacks.insert(0, heldout)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    prepare_reference_model(trainer, loaded_dtype(model_args.dtype, model_args.model_name_or_path))
    train_vision_at(trainer, od.vision_learning_rate)
    if heldout is not None:
        heldout.trainer = trainer
    if not timed_generation(trainer, telemetry):
        logger.warning("this TRL has no _generate_single_turn: generation speed is not measured")
    summary.setup = run_setup(trainer)
    load_weights_here(trainer, resume)
    try:
        status = run_training(trainer, summary, resume)
    finally:
        telemetry.close()
    if status != 0:
        return status
    if od.save_final_model:
        trainer.save_model(args.output_dir)
        if is_main:
            save_processor(processor, args.output_dir, model_type(model_args.model_name_or_path))
    if is_main:
        result = summary.summary()
        logger.info(
            "done: %d steps, %.3f steps/s, reward wait %.2f%% of step time; summary in %s",
            result["steps"],
            result["steps_per_second"] or 0.0,
            100 * (result["reward_wait_share"] or 0.0),
            output_dir / "train_summary.json",
        )
    return 0


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    raise SystemExit(main())
