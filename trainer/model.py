"""Loading Qwen2.5-VL and its processor, and generating with it: shared by training and evaluation.

The processor needs care on machines without torchvision: Qwen2.5-VL's processor has a video
processor, which needs torchvision, and ``AutoProcessor.from_pretrained`` then silently returns the
bare tokenizer (TRL later fails with ``KeyError: 'pixel_values'``). `load_processor` detects that and
builds the processor from its image processor and tokenizer alone (`image_only_processor`, for
Qwen2-VL, Qwen2.5-VL and Qwen3-VL alike). Checkpoints are saved naming the standard processor class
(`save_processor`), so that ``AutoProcessor.from_pretrained`` loads them where torchvision exists.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The language model's projections. With the vision tower frozen, LoRA must not attach to the vision
# blocks' MLPs (they use the same names), hence a regex over module paths rather than bare names.
LANGUAGE_LORA_TARGETS = r"^(?!.*visual).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


# The processor class each family's checkpoint names (processor_config.json), so that
# ``AutoProcessor.from_pretrained`` builds the standard processor where torchvision exists.
STANDARD_PROCESSORS = {
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
    "qwen3_vl_moe": "Qwen3VLProcessor",
}


def _image_only_processor_class(model_type: str = "qwen2_5_vl"):
    import transformers
    from transformers.processing_utils import ProcessorMixin

    base: Any = getattr(transformers, STANDARD_PROCESSORS.get(model_type, "Qwen2_5_VLProcessor"))

    class ImageOnlyProcessor(base):
        """The family's processor without the video processor (which needs torchvision). Images and
        text behave exactly as in the full processor; asking it for videos fails."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            for kind in ("image", "video", "vision_start", "vision_end"):
                default = {
                    "image": "<|image_pad|>",
                    "video": "<|video_pad|>",
                    "vision_start": "<|vision_start|>",
                    "vision_end": "<|vision_end|>",
                }[kind]
                token = getattr(tokenizer, f"{kind}_token", None) or default
                setattr(self, f"{kind}_token", token)
                setattr(self, f"{kind}_token_id", tokenizer.convert_tokens_to_ids(token))
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    ImageOnlyProcessor.__name__ = ImageOnlyProcessor.__qualname__ = f"ImageOnly{base.__name__}"
    return ImageOnlyProcessor


def image_only_processor(
    image_processor: Any, tokenizer: Any, chat_template: str | None, model_type: str = "qwen2_5_vl"
):
    return _image_only_processor_class(model_type)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template
    )


def model_type(model_path: str | Path) -> str:
    """``model_type`` of the model saved in ``model_path`` (qwen2_5_vl when unreadable)."""
    config = Path(model_path) / "config.json"
    if config.is_file():
        return str(json.loads(config.read_text(encoding="utf-8")).get("model_type", "qwen2_5_vl"))
    return "qwen2_5_vl"


def save_processor(processor: Any, out_dir: str | Path, family: str) -> None:
    """``processor.save_pretrained(out_dir)`` naming the family's standard processor class (not our
    image-only subclass), so that ``AutoProcessor.from_pretrained(out_dir)`` loads it."""
    out = Path(out_dir)
    processor.save_pretrained(out)
    standard = STANDARD_PROCESSORS.get(family, "Qwen2_5_VLProcessor")
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = out / name
        if path.is_file():
            content = json.loads(path.read_text(encoding="utf-8"))
            if "processor_class" in content:
                content["processor_class"] = standard
                path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def _chat_template(path: Path, tokenizer: Any) -> str | None:
    """The processor's chat template as saved in ``path`` (jinja or json file), else the tokenizer's."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    as_json = path / "chat_template.json"
    if as_json.is_file():
        return json.loads(as_json.read_text(encoding="utf-8"))["chat_template"]
    return getattr(tokenizer, "chat_template", None)


def load_processor(
    model_path: str,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    padding_side: str | None = None,
):
    """The model's processor with images resized within [min_pixels, max_pixels] (None: as saved,
    the one source of the resize bounds for training and evaluation alike).

    ``padding_side="left"`` for GRPO: TRL re-tokenises the prompts with this processor in its
    training forward pass and lines the image-token flags up with LEFT-padded prompt ids; a
    right-padding processor silently puts image features on the wrong tokens."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    processor = None
    try:
        processor = AutoProcessor.from_pretrained(model_path)
    except (ImportError, OSError, ValueError) as exc:
        logger.debug("AutoProcessor could not load %s (%s); building it without a video processor", model_path, exc)
    if processor is None or not hasattr(processor, "image_processor"):
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        processor = image_only_processor(
            AutoImageProcessor.from_pretrained(model_path),
            tokenizer,
            _chat_template(Path(model_path), tokenizer),
            model_type(model_path),
        )
    if min_pixels is not None or max_pixels is not None:
        size = dict(processor.image_processor.size)
        if min_pixels is not None:
            size["shortest_edge"] = int(min_pixels)
        if max_pixels is not None:
            size["longest_edge"] = int(max_pixels)
        processor.image_processor.size = size
    if padding_side is not None:
        processor.tokenizer.padding_side = padding_side
        processor.tokenizer.truncation_side = padding_side
    return processor


HALF_PRECISION = ("bfloat16", "float16")


def loaded_dtype(dtype: str | None, model_path: str | Path | None) -> str | None:
    """The dtype ``from_pretrained(model_path, dtype=dtype)`` loads: ``dtype``, or for None and "auto"
    (transformers 5's default) the one the weights were saved in, as ``config.json`` says (None when
    it does not)."""
    if dtype not in (None, "auto") or model_path is None:
        return dtype
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return None
    saved = json.loads(config.read_text(encoding="utf-8"))
    found = saved.get("dtype") or saved.get("torch_dtype") or (saved.get("text_config") or {}).get("dtype")
    return str(found) if found else None


def master_weights_dtype(
    dtype: str | None, args: Any, full_fine_tuning: bool, model_path: str | Path | None = None
) -> str | None:
    """The dtype to load the weights of a training run in: ``dtype``, except float32 for a full
    fine-tune that would otherwise keep its only copy of the weights in half precision (``dtype``
    None or "auto" loads ``model_path``'s saved dtype: bf16 for the published Qwen-VL checkpoints).

    AdamW's step is about the learning rate, and bf16 resolves about 1/256 of a weight: at the
    recipes' lr 1e-6 the update of a typical weight rounds away. One AdamW step at lr 1e-6 changed
    2.0% of the small preset's bf16 weights (15.6% at 1e-5, 88% at 1e-4) against 100% in float32
    (measured, tests/trainer/test_master_weights.py). DeepSpeed and FSDP keep float32 master weights
    themselves, and LoRA trains float32 adapters: ``dtype`` stays for those. Compute still runs in
    ``--bf16``/``--fp16`` autocast, so the cost is memory (weights, gradients, optimizer in float32).

    >>> from types import SimpleNamespace
    >>> plain = SimpleNamespace(deepspeed=None, deepspeed_plugin=None, fsdp=[])
    >>> master_weights_dtype("bfloat16", plain, full_fine_tuning=True)
    'float32'
    >>> master_weights_dtype("bfloat16", plain, full_fine_tuning=False)
    'bfloat16'
    """
    loaded = loaded_dtype(dtype, model_path)
    if loaded not in HALF_PRECISION or not full_fine_tuning or _keeps_master_weights(args):
        return dtype
    autocast = "bf16" if getattr(args, "bf16", False) else "fp16" if getattr(args, "fp16", False) else None
    logger.warning(
        "full fine-tuning %s weights with no DeepSpeed or FSDP: they are loaded in float32 (master weights; %s), "
        "since AdamW updates at small learning rates are below %s's resolution and would round away",
        loaded,
        f"compute runs in {autocast} autocast" if autocast else "without --bf16/--fp16, compute runs in float32",
        loaded,
    )
    return "float32"


def prepare_reference_model(trainer: Any, dtype: str | None) -> None:
    """TRL's KL reference model (GRPO with beta > 0), which it builds itself with ``from_pretrained``:
    the packed vision attention as the policy has, and the requested half-precision ``dtype`` when
    the policy was loaded in float32 for its master weights (the reference never trains, so float32
    would only double its memory)."""
    import torch

    from trainer.attention import use_packed_vision_attention

    reference = getattr(trainer, "ref_model", None)
    if reference is None:
        return
    reference = getattr(reference, "module", reference)  # a DeepSpeed engine's model
    use_packed_vision_attention(reference)
    if dtype in HALF_PRECISION and reference.dtype == torch.float32 and not _keeps_master_weights(trainer.args):
        reference.to(getattr(torch, dtype))


def _keeps_master_weights(args: Any) -> bool:
    """Whether the run's DeepSpeed or FSDP keeps float32 master weights of half-precision ones."""
    import os

    if getattr(args, "deepspeed", None) or getattr(args, "deepspeed_plugin", None) or getattr(args, "fsdp", None):
        return True
    return any(os.environ.get(f"ACCELERATE_USE_{name}", "").lower() in ("1", "true") for name in ("DEEPSPEED", "FSDP"))


def load_model(model_path: str, dtype: str | None = None, attn_implementation: str | None = None):
    """Qwen2.5-VL (any image-text-to-text model) for training or generation; without a flash kernel its
    vision tower attends through `trainer.attention.packed_attention`."""
    import torch
    from transformers import AutoModelForImageTextToText

    from trainer.attention import use_packed_vision_attention

    kwargs: dict[str, Any] = {}
    if dtype not in (None, "auto"):
        kwargs["dtype"] = getattr(torch, dtype)
    elif dtype == "auto":
        kwargs["dtype"] = "auto"
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(model_path, **kwargs)
    use_packed_vision_attention(model)  # one attention call per vision layer, not one per image
    return model


def vision_modules(model: Any) -> list:
    """The vision tower (and its merger) of a Qwen2-VL style model."""
    found: list[tuple[str, Any]] = []
    for name, module in model.named_modules():
        if name.endswith("visual") and not any(name.startswith(f + ".") for f, _ in found):
            found.append((name, module))
    return [module for _, module in found]


def train_vision_at(trainer: Any, learning_rate: float | None) -> bool:
    """Give the vision tower (and its merger) of ``trainer``'s model its own peak ``learning_rate``
    (None: leave the run's); returns whether it did.

    Why: trained from scratch at a rate that suits the language model (1e-3 for the small preset),
    AdamW grows the merger's output into one large vector shared by every image token (its norm
    went from about 5 to 316 in 100 steps while the part that differs between tokens stayed near
    2, on this CPU): after the language model's RMSNorm the images differ less and less. A lower
    rate for the vision side alone keeps them apart.

    Trainer's own optimizer is built as usual, with its weight-decay groups; the vision parameters
    then move into groups of their own at ``learning_rate``. The scheduler, built afterwards, scales
    every group's rate by the same factor. Resuming restores the optimizer's saved groups, so a run
    resumes with the vision rate it started with. A run whose optimizer holds no vision parameter
    (a frozen or LoRA-only tower, FSDP's flattened parameters) or is DeepSpeed's own stops with a
    `trainer.errors.UserError` instead of training at one rate unnoticed.

    >>> import torch
    >>> class Tiny(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.visual, self.head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> class FakeTrainer:  # the one method Trainer calls
    ...     model = Tiny()
    ...     def create_optimizer(self):
    ...         return torch.optim.AdamW(self.model.parameters(), lr=1e-3)
    >>> trainer = FakeTrainer()
    >>> train_vision_at(trainer, 1e-4)
    True
    >>> sorted((group["lr"], len(group["params"])) for group in trainer.create_optimizer().param_groups)
    [(0.0001, 2), (0.001, 2)]
    """
    import math

    from trainer.errors import UserError

    if learning_rate is None:
        return False
    if not (math.isfinite(learning_rate) and learning_rate >= 0):
        raise UserError(f"--vision_learning_rate {learning_rate}: give a finite rate of 0 or more")
    model = getattr(trainer.model, "module", trainer.model)
    vision = {id(p) for module in vision_modules(model) for p in module.parameters()}
    if not vision:
        raise UserError(f"--vision_learning_rate: {type(model).__name__} has no 'visual' module; leave the option out")
    build = trainer.create_optimizer

    def create_optimizer(*args: Any, **kwargs: Any) -> Any:
        optimizer = build(*args, **kwargs)
        groups = getattr(optimizer, "param_groups", None)
        if groups is None:  # accelerate's placeholder for an optimizer a DeepSpeed config defines
            raise UserError(
                "--vision_learning_rate: the DeepSpeed config defines the optimizer, which this option cannot "
                "split; remove its 'optimizer' section (Trainer then builds AdamW) or leave the option out"
            )
        if getattr(optimizer, "vision_groups_split", False):  # Trainer asks again after DeepSpeed's set-up
            return optimizer
        moved = 0
        for group in list(groups):
            own = [p for p in group["params"] if id(p) in vision]
            if not own:
                continue
            moved += len(own)
            group["params"] = [p for p in group["params"] if id(p) not in vision]
            settings = {key: value for key, value in group.items() if key not in ("params", "initial_lr")}
            optimizer.add_param_group({**settings, "params": own, "lr": learning_rate})
        if not moved:
            raise UserError(
                "--vision_learning_rate: no vision parameter is trained (a frozen vision tower, LoRA adapters on "
                "the language model only, or FSDP's flattened parameters); leave the option out"
            )
        groups[:] = [group for group in groups if group["params"]]
        optimizer.vision_groups_split = True
        return optimizer

    trainer.create_optimizer = create_optimizer
    return True


def freeze_vision(model: Any) -> int:
    """Stop gradients into the vision tower; returns how many parameters were frozen."""
    modules = vision_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no 'visual' module to freeze")
    frozen = 0
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def chat_messages(question: str, n_images: int = 1) -> list[dict]:
    """One user turn: the images, then the question (the layout TRL gives training prompts)."""
    return [
        {"role": "user", "content": [*({"type": "image"} for _ in range(n_images)), {"type": "text", "text": question}]}
    ]


def generate(
    model: Any,
    processor: Any,
    questions: Sequence[str],
    images: Sequence[Sequence[Any]],
    max_new_tokens: int = 1024,
    do_sample: bool = False,
    **generation_kwargs: Any,
) -> list[str]:
    """Answers of ``model`` to ``questions`` (templated already), each with its list of PIL images."""
    import torch

    texts = [
        processor.apply_chat_template(chat_messages(q, len(imgs)), add_generation_prompt=True, tokenize=False)
        for q, imgs in zip(questions, images, strict=True)
    ]
    flat_images = [image for imgs in images for image in imgs]
    tokenizer = processor.tokenizer
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        inputs = processor(text=texts, images=flat_images or None, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = previous_side
    inputs = inputs.to(model.device)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, **generation_kwargs)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return processor.batch_decode(new_tokens, skip_special_tokens=True)
