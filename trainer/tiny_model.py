"""A small, randomly initialised Qwen2.5-VL or Qwen3-VL, built offline: ``python -m trainer.tiny_model OUT_DIR``.

The real architecture (vision tower, merger, M-RoPE language model), the real image processor, a
byte-level BPE tokenizer trained here on the research's prompts with Qwen's special tokens and a
Qwen2-VL chat template. Two presets (`PRESETS`):

* ``tiny`` (default): a few hundred thousand parameters, 4-16 merged image patches; for tests, the
  demo and the CPU runs. It never learns much.
* ``small``: tens of millions of parameters, a tokenizer that splits every digit into its own token
  (so coordinates are spelt digit by digit, as Qwen's own tokenizer does), and images of up to
  36 merged patches (168 x 168 pixels), large enough to see the shapes of ``trainer.synthetic
  --preset small`` (sides of 20 to 55 pixels). Trained from scratch with ``trainer.sft``, it is the
  miniature of the research that ``bench/efficacy.sh`` trains and measures on one GPU.

``--family qwen3_vl`` builds either preset as a Qwen3-VL instead (deepstack vision features,
interleaved M-RoPE, 16-pixel patches; boxes in 0-1000, see trainer.data).

Two more presets are the published architectures at full size (`PUBLISHED`), with random weights:
``qwen2_5_vl_3b`` (Qwen2.5-VL-3B-Instruct, 3.75 billion parameters) and ``qwen3_vl_4b``
(Qwen3-VL-4B-Instruct, 4.44 billion), for measuring the recipes' memory and speed without the
weights (``bench/fullsize.sh``). Their configuration is the published ``config.json`` except the
special tokens' ids, which are this tokenizer's (the vocabulary size stays the published 151,936:
sampled ids beyond the tokenizer's decode to nothing). Build them on the GPU in bf16:
``python -m trainer.tiny_model OUT --preset qwen2_5_vl_3b --device cuda --dtype bfloat16``.

``AutoModelForImageTextToText.from_pretrained(OUT_DIR)`` and ``AutoTokenizer``/``AutoImageProcessor``
load it; ``trainer.model.load_processor(OUT_DIR)`` gives the processor (without a video processor
where torchvision is missing, see trainer.model).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import prompts

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL's chat layout: a default system turn, images as <|vision_start|><|image_pad|><|vision_end|>
# (the processor expands <|image_pad|> to one token per merged patch), turns closed by <|im_end|>.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

DEFAULT_MIN_PIXELS = 28 * 28 * 4
DEFAULT_MAX_PIXELS = 28 * 28 * 16


@dataclass(frozen=True)
class Preset:
    """Sizes of one model preset (see the module docstring)."""

    vocab_size: int
    split_digits: bool
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    min_pixels: int
    max_pixels: int
    # Qwen2.5-VL's windowed vision attention: without flash attention transformers runs one attention
    # call per window of every image, so a window as large as the largest image means one call per
    # image and layer (the small preset's images are at most 168 pixels a side).
    vision_window: int = 112


PRESETS: dict[str, Preset] = {
    "tiny": Preset(512, False, 64, 2, 4, 2, 32, 2, 2, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS),
    "small": Preset(1024, True, 512, 8, 8, 4, 256, 4, 4, 28 * 28 * 9, 28 * 28 * 36, vision_window=168),
}


@dataclass(frozen=True)
class Published:
    """A published architecture: its family, its ``config.json`` (token ids replaced at build time)
    and its image processor's resize bounds, in pixels."""

    family: str
    config: dict
    min_pixels: int
    max_pixels: int


# Transcribed from the models' published config.json and preprocessor_config.json
# (Qwen/Qwen2.5-VL-3B-Instruct, Qwen/Qwen3-VL-4B-Instruct); transformers reads the 2.5 file's older
# layout (text settings at the top, rope_scaling) as it reads the published checkpoint. The
# tokenizer is the 'small' preset's (digits spelt one by one, as Qwen's).
PUBLISHED: dict[str, Published] = {
    "qwen2_5_vl_3b": Published(
        "qwen2_5_vl",
        {
            "model_type": "qwen2_5_vl",
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "attention_dropout": 0.0,
            "hidden_act": "silu",
            "hidden_size": 2048,
            "initializer_range": 0.02,
            "intermediate_size": 11008,
            "max_position_embeddings": 128000,
            "max_window_layers": 70,
            "num_attention_heads": 16,
            "num_hidden_layers": 36,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0,
            "sliding_window": 32768,
            "use_sliding_window": False,
            "tie_word_embeddings": True,
            "use_cache": True,
            "vocab_size": 151936,
            "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
            "vision_config": {
                "depth": 32,
                "hidden_act": "silu",
                "hidden_size": 1280,
                "intermediate_size": 3420,
                "num_heads": 16,
                "in_chans": 3,
                "out_hidden_size": 2048,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "spatial_patch_size": 14,
                "window_size": 112,
                "fullatt_block_indexes": [7, 15, 23, 31],
                "tokens_per_second": 2,
                "temporal_patch_size": 2,
            },
        },
        min_pixels=3136,
        max_pixels=12845056,
    ),
    "qwen3_vl_4b": Published(
        "qwen3_vl",
        {
            "model_type": "qwen3_vl",
            "architectures": ["Qwen3VLForConditionalGeneration"],
            "tie_word_embeddings": True,
            "text_config": {
                "model_type": "qwen3_vl_text",
                "attention_bias": False,
                "attention_dropout": 0.0,
                "head_dim": 128,
                "hidden_act": "silu",
                "hidden_size": 2560,
                "initializer_range": 0.02,
                "intermediate_size": 9728,
                "max_position_embeddings": 262144,
                "num_attention_heads": 32,
                "num_hidden_layers": 36,
                "num_key_value_heads": 8,
                "rms_norm_eps": 1e-06,
                "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
                "rope_theta": 5000000,
                "tie_word_embeddings": True,
                "use_cache": True,
                "vocab_size": 151936,
            },
            "vision_config": {
                "model_type": "qwen3_vl",
                "deepstack_visual_indexes": [5, 11, 17],
                "depth": 24,
                "hidden_act": "gelu_pytorch_tanh",
                "hidden_size": 1024,
                "in_channels": 3,
                "initializer_range": 0.02,
                "intermediate_size": 4096,
                "num_heads": 16,
                "num_position_embeddings": 2304,
                "out_hidden_size": 2560,
                "patch_size": 16,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
            },
        },
        min_pixels=65536,
        max_pixels=16777216,
    ),
}
PRESET_NAMES = (*PRESETS, *PUBLISHED)


def corpus(seed: int = 0, n: int = 400) -> Iterator[str]:
    """Text the tokenizer is trained on: the research's questions, templates and answers."""
    from trainer.synthetic import COLOURS, SHAPES

    rng = random.Random(seed)
    labels = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
    for _ in range(n):
        asked = rng.sample(labels, rng.randint(1, 3))
        question = (prompts.detection_question if rng.random() < 0.5 else prompts.ovd_question)(asked)
        yield prompts.apply_template(question, rng.choice(["standard", "enhanced"]))
        items = [
            {"bbox_2d": sorted(rng.sample(range(0, 400), 2)) + sorted(rng.sample(range(0, 400), 2)), "label": label}
            for label in asked[: rng.randint(0, len(asked))]
        ]
        yield f"<think> I see {', '.join(asked)}. </think><answer>{prompts.answer_text(items)}</answer>"


def build_tokenizer(vocab_size: int = 512, split_digits: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # Qwen's tokenizer spells numbers digit by digit; a merged "123" token would make every
    # coordinate its own class, which a small model cannot learn.
    backend.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


FAMILIES = ("qwen2_5_vl", "qwen3_vl")
# Qwen3-VL sees 16-pixel patches (32-pixel merged patches), Qwen2.5-VL 14 (28): the presets' pixel
# bounds, given in 28-pixel cells, are scaled by this to keep the same number of image tokens.
PATCH_SIZE = {"qwen2_5_vl": 14, "qwen3_vl": 16}


def build_qwen3_vl_config(tokenizer, preset: Preset = PRESETS["tiny"]):
    """Qwen3-VL's architecture (deepstack vision features, interleaved M-RoPE) at ``preset``'s sizes."""
    from transformers import Qwen3VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    hidden_size, vision_hidden = preset.hidden_size, preset.vision_hidden
    head_dim = hidden_size // preset.heads
    spatial = (head_dim // 2) * 5 // 16  # Qwen3-VL's [24, 20, 20] of 64 rotary pairs, in proportion
    return Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": preset.layers,
            "num_attention_heads": preset.heads,
            "num_key_value_heads": preset.kv_heads,
            "head_dim": head_dim,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [head_dim // 2 - 2 * spatial, spatial, spatial],
                "mrope_interleaved": True,
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": preset.vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": 2 * vision_hidden,
            "num_heads": preset.vision_heads,
            "out_hidden_size": hidden_size,
            "patch_size": PATCH_SIZE["qwen3_vl"],
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": list(range(min(preset.vision_depth, preset.layers) - 1)) or [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_config(tokenizer, preset: Preset = PRESETS["tiny"]):
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    hidden_size, vision_hidden = preset.hidden_size, preset.vision_hidden
    head_dim = hidden_size // preset.heads
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": preset.layers,
            "num_attention_heads": preset.heads,
            "num_key_value_heads": preset.kv_heads,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                # M-RoPE: head_dim / 2 rotary pairs over (time, height, width), in Qwen's 2:3:3 proportion
                "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": preset.vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": 2 * vision_hidden,
            "num_heads": preset.vision_heads,
            "out_hidden_size": hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": preset.vision_window,
            "fullatt_block_indexes": [preset.vision_depth - 1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_published_config(tokenizer, name: str):
    """The published configuration ``PUBLISHED[name]`` with the tokenizer's special-token ids."""
    from transformers import AutoConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    raw = copy.deepcopy(PUBLISHED[name].config)
    raw.update(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    text = raw.get("text_config", raw)  # Qwen2.5-VL's file keeps the text settings at the top
    text.update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    return AutoConfig.for_model(**raw)


def raise_end_of_text(model, end_ids: Sequence[int], rate: float, dim: int = 0) -> None:
    """Make a random model end its answers at ``rate`` per token (instead of 1 / vocabulary size).

    A random model's next-token distribution is nearly uniform, so it practically never samples an
    end token within a short completion: every completion has the same length, every length-aware
    reward (cosine) the same value, every GRPO advantage is 0 and nothing trains. Here one
    embedding dimension is set to a constant, so the final hidden state always carries it, and only
    the end tokens' output rows read that dimension. Everything else stays random. ``rate`` is
    calibrated on random token streams; in GRPO on the synthetic prompts the default 0.06 gives
    completions of 2 to 32 tokens, averaging about 12."""
    import math

    import torch

    config = model.config.text_config
    vocab = config.vocab_size
    logit = math.log(rate / (1 - rate) * (vocab - len(end_ids)) / len(end_ids))
    with torch.no_grad():
        model.get_input_embeddings().weight[:, dim] = 25 * config.initializer_range
        # What the final hidden state carries in that dimension, measured on random text.
        probe = torch.randint(0, vocab, (4, 64), generator=torch.Generator().manual_seed(0))
        carried = model.model.language_model(input_ids=probe).last_hidden_state[..., dim].mean().item()
        head = model.get_output_embeddings().weight
        head[:, dim] = 0.0
        head[list(end_ids), dim] = logit / carried


def build(
    out_dir: str | Path,
    seed: int = 0,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    eos_rate: float | None = 0.06,
    preset: str = "tiny",
    family: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
) -> Path:
    """Write the model, tokenizer, image processor and processor config of ``preset`` to ``out_dir``.

    ``min_pixels``/``max_pixels`` default to the preset's; ``eos_rate`` (see `raise_end_of_text`)
    makes a random model end its answers; None leaves the model as initialised (the ``small``
    preset is trained with SFT first, which teaches it to end). ``family``: ``qwen2_5_vl`` (boxes in
    pixels of the resized image) or ``qwen3_vl`` (boxes in 0-1000), see trainer.data; default: the
    published preset's, else qwen2_5_vl. ``device``/``dtype`` (e.g. ``cuda``, ``bfloat16``): where
    and in which precision the weights are initialised and saved (default: the CPU, float32)."""
    return _build(out_dir, seed, min_pixels, max_pixels, eos_rate, preset, family, device, dtype)[0]


def _build(
    out_dir: str | Path,
    seed: int,
    min_pixels: int | None,
    max_pixels: int | None,
    eos_rate: float | None,
    preset: str,
    family: str | None,
    device: str = "cpu",
    dtype: str | None = None,
) -> tuple[Path, int]:
    """`build`, returning (out_dir, parameter count)."""
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    published = PUBLISHED.get(preset)
    if published is not None and family not in (None, published.family):
        raise ValueError(f"preset {preset!r} is a {published.family} model, not {family}: leave --family out")
    family = published.family if published is not None else (family or "qwen2_5_vl")
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from trainer.model import image_only_processor, save_processor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    sizes = PRESETS["small" if published is not None else preset]  # the published ones take small's tokenizer
    tokenizer = build_tokenizer(sizes.vocab_size, sizes.split_digits)
    if published is not None:
        config = build_published_config(tokenizer, preset)
    elif family == "qwen3_vl":
        config = build_qwen3_vl_config(tokenizer, sizes)
    else:
        config = build_config(tokenizer, sizes)
    model_class: Any = Qwen3VLForConditionalGeneration if family == "qwen3_vl" else Qwen2_5_VLForConditionalGeneration
    default_dtype = torch.get_default_dtype()
    try:  # initialised where and as it is saved: a 3B model in float32 on the CPU takes minutes
        if dtype is not None:
            torch.set_default_dtype(getattr(torch, dtype))
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(default_dtype)
    if eos_rate is not None:
        raise_end_of_text(model, [config.text_config.eos_token_id, config.text_config.bos_token_id], eos_rate)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.bos_token_id],
        pad_token_id=config.text_config.pad_token_id,
        do_sample=True,
        temperature=1.0,
    )
    model.save_pretrained(out)
    parameters = parameter_count(model)
    del model
    settings: dict[str, Any] = {"patch_size": PATCH_SIZE[family], "merge_size": 2}
    if published is not None:
        settings.update(min_pixels=published.min_pixels, max_pixels=published.max_pixels)
    else:
        cell = (PATCH_SIZE[family] * 2 / 28) ** 2  # the presets' bounds are in 28-pixel cells
        settings.update(min_pixels=round(sizes.min_pixels * cell), max_pixels=round(sizes.max_pixels * cell))
    if min_pixels is not None:
        settings["min_pixels"] = min_pixels
    if max_pixels is not None:
        settings["max_pixels"] = max_pixels
    if family == "qwen3_vl":  # Qwen3-VL normalises pixels to [-1, 1]
        settings.update(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    image_processor = Qwen2VLImageProcessorPil(**settings)
    processor = image_only_processor(image_processor, tokenizer, CHAT_TEMPLATE, family)
    # The standard processor class is named, so that where torchvision exists AutoProcessor builds
    # the full processor from these files; tokenizer_config.json carries the chat template too.
    save_processor(processor, out, family)
    tokenizer.save_pretrained(out)
    save_processor_class(out, family)
    return out, parameters


def save_processor_class(out: Path, family: str) -> None:
    from trainer.model import STANDARD_PROCESSORS

    for name in ("processor_config.json", "tokenizer_config.json"):
        path = out / name
        if path.is_file():
            data = json.loads(path.read_text())
            if "processor_class" in data:
                data["processor_class"] = STANDARD_PROCESSORS[family]
                path.write_text(json.dumps(data, indent=2) + "\n")


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="od-tiny-model", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument(
        "--preset",
        default="tiny",
        choices=PRESET_NAMES,
        help="model size (default: tiny); qwen2_5_vl_3b and qwen3_vl_4b are the published architectures",
    )
    parser.add_argument(
        "--family",
        default=None,
        choices=FAMILIES,
        help="architecture: qwen2_5_vl (boxes in resized pixels, the default) or qwen3_vl (boxes in 0-1000); "
        "the published presets have their own",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-pixels", type=int, default=None, help="default: the preset's")
    parser.add_argument("--max-pixels", type=int, default=None, help="default: the preset's")
    parser.add_argument("--device", default="cpu", help="where the weights are initialised, e.g. cuda (default: cpu)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "bfloat16", "float16"),
        help="weights' precision (default: float32)",
    )
    args = parser.parse_args(argv)
    # The tiny model is used untrained, so it must end its answers; the small one learns it in SFT.
    # The published ones answer up to the length limit: every completion is as long as a run allows.
    eos_rate = 0.06 if args.preset == "tiny" else None
    try:
        out, parameters = _build(
            args.out_dir,
            args.seed,
            args.min_pixels,
            args.max_pixels,
            eos_rate,
            args.preset,
            args.family,
            args.device,
            args.dtype,
        )
    except ValueError as exc:
        parser.error(str(exc))
    family = PUBLISHED[args.preset].family if args.preset in PUBLISHED else args.family or "qwen2_5_vl"
    print(f"{args.preset} {family} ({parameters:,} parameters) written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
