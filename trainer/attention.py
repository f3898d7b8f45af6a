"""A few attention calls per vision layer for a whole batch of images, without flash-attn installed.

Qwen-VL vision towers pack every image of a batch into one sequence and attend within each image
(or window) only. With flash attention, transformers hands the packed sequence and its boundaries
(``cu_seqlens``) to one varlen kernel; with ``eager`` or ``sdpa`` it splits the sequence and runs
one attention call per image or window, in a Python loop: at a batch of 256 images that is
thousands of tiny kernels per step, and the GPU waits on Python.

`packed_attention` takes the flash path's arguments and computes the same attention with one
``scaled_dot_product_attention`` call per distinct sequence length: the sequences of each length
are gathered into one batch (no padding, no mask) and the results scattered back. transformers
picks the flash code path for any implementation name containing "flash"
(``is_flash_attention_requested``), so `use_packed_vision_attention` registers the function
under such a name and sets it on the vision configuration of a model already loaded (not through
``from_pretrained``, which would look for the flash-attn package). The language model keeps its own
implementation, and the name is not saved with the model.
"""

from __future__ import annotations

from typing import Any

PACKED_VISION_ATTENTION = "flash_packed_sdpa"  # "flash" selects transformers' packed code path; see above


def packed_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any = None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: Any = None,
    max_length_q: int | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention within each packed sequence of ``query/key/value`` (``(1, heads, tokens, dim)``),
    bounded by ``cu_seq_lens_q``; returns ``((1, tokens, heads, dim), None)`` as flash kernels do.

    Sequences of the same length are gathered into one batch and attended in one call, so a layer
    costs one call per distinct length (a few: images of a data set come in few sizes, windows in
    fewer), with no padding and no mask: memory and work stay those of the real tokens whatever the
    mix of sizes.

    >>> import torch
    >>> q = torch.randn(1, 2, 5, 4)
    >>> out, _ = packed_attention(None, q, q, q, cu_seq_lens_q=torch.tensor([0, 2, 5]))
    >>> first = torch.nn.functional.scaled_dot_product_attention(q[:, :, :2], q[:, :, :2], q[:, :, :2])
    >>> torch.allclose(out[:, :2], first.transpose(1, 2), atol=1e-6)
    True
    """
    import torch
    from torch.nn import functional

    tokens = query.shape[2]
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
    if cu_seq_lens_q is None:  # one sequence
        bounds = torch.tensor([0, tokens], device=query.device)
    else:
        bounds = cu_seq_lens_q.to(device=query.device, dtype=torch.long)
    starts, lengths = bounds[:-1], bounds[1:] - bounds[:-1]
    out = torch.empty_like(q)
    for length in torch.unique(lengths).tolist():  # one host sync per layer
        if length == 0:
            continue
        rows = starts[lengths == length, None] + torch.arange(length, device=query.device)  # (n, length)
        q_rows, k_rows, v_rows = (t[rows].transpose(1, 2) for t in (q, k, v))  # (n, heads, length, dim)
        attended = functional.scaled_dot_product_attention(q_rows, k_rows, v_rows, dropout_p=dropout, scale=scaling)
        out[rows] = attended.transpose(1, 2)
    return out.unsqueeze(0), None


def use_packed_vision_attention(model: Any) -> bool:
    """Route ``model``'s vision tower through `packed_attention` unless it already uses a flash
    kernel; returns whether it did. Models without a vision configuration are left as they are."""
    from transformers import AttentionInterface
    from transformers.utils.generic import is_flash_attention_requested

    vision = getattr(model.config, "vision_config", None)
    if vision is None or is_flash_attention_requested(vision):
        return False
    AttentionInterface.register(PACKED_VISION_ATTENTION, packed_attention)
    vision._attn_implementation = PACKED_VISION_ATTENTION
    return True


class WithRopePositions:
    """A data collator that adds each batch's 3-D rope positions (``position_ids``), computed by the
    model's own ``get_rope_index``.

    Qwen-VL models compute these positions in their forward pass with a Python loop over the
    batch's samples (about 0.7 ms a sample: 180 ms of each 500 ms SFT step at batch 256 on an
    H200, measured). Computed here, they cost the same but in the data loader's worker processes,
    beside the training step instead of before it; the model skips its own computation when
    ``position_ids`` are given, and the values are the same. ``rope_index`` is the bound
    ``get_rope_index`` of the loaded model: it reads only the configuration and the batch's CPU
    tensors, never the weights, so forked workers may call it.
    """

    def __init__(self, collator: Any, rope_index: Any) -> None:
        self.collator = collator
        self.rope_index = rope_index

    def __call__(self, examples: list) -> Any:
        batch = self.collator(examples)
        if "mm_token_type_ids" in batch and "image_grid_thw" in batch:
            batch["position_ids"], _ = self.rope_index(
                batch["input_ids"],
                mm_token_type_ids=batch["mm_token_type_ids"],
                image_grid_thw=batch["image_grid_thw"],
                attention_mask=batch.get("attention_mask"),
            )
        return batch


def rope_positions_in_collator(trainer: Any) -> bool:
    """Wrap ``trainer``'s collator in `WithRopePositions` when its model has a ``get_rope_index``."""
    inner = getattr(trainer.model, "model", None)
    rope_index = getattr(inner, "get_rope_index", None)
    if rope_index is None or isinstance(trainer.data_collator, WithRopePositions):
        return False
    trainer.data_collator = WithRopePositions(trainer.data_collator, rope_index)
    return True
