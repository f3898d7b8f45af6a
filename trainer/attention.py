"""One attention call per vision layer for the whole batch of images, without flash-attn installed.

Qwen-VL vision towers pack every image of a batch into one sequence and attend within each image
(or window) only. With flash attention, transformers hands the packed sequence and its boundaries
(``cu_seqlens``) to one varlen kernel; with ``eager`` or ``sdpa`` it splits the sequence and runs
one attention call per image or window, in a Python loop: at a batch of 256 images that is
thousands of tiny kernels per step, and the GPU waits on Python.

`packed_attention` takes the flash path's arguments and computes the same attention with one
``scaled_dot_product_attention`` call: the packed tokens are scattered into a padded
``(sequences, heads, longest, dim)`` batch, padding keys are masked out, and the result is
gathered back. transformers picks the flash code path for any implementation name containing
"flash" (``is_flash_attention_requested``), so `use_packed_vision_attention` registers the function
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

    >>> import torch
    >>> q = torch.randn(1, 2, 5, 4)
    >>> out, _ = packed_attention(None, q, q, q, cu_seq_lens_q=torch.tensor([0, 2, 5]), max_length_q=3)
    >>> first = torch.nn.functional.scaled_dot_product_attention(q[:, :, :2], q[:, :, :2], q[:, :, :2])
    >>> torch.allclose(out[:, :2], first.transpose(1, 2), atol=1e-6)
    True
    """
    import torch
    from torch.nn import functional

    if cu_seq_lens_q is None:  # one sequence: plain attention
        out = functional.scaled_dot_product_attention(query, key, value, dropout_p=dropout, scale=scaling)
        return out.transpose(1, 2), None
    _, heads, tokens, dim = query.shape
    bounds = cu_seq_lens_q.to(device=query.device, dtype=torch.long)
    lengths = bounds[1:] - bounds[:-1]
    longest = int(max_length_q) if max_length_q is not None else int(lengths.max())
    sequence = torch.repeat_interleave(torch.arange(len(lengths), device=query.device), lengths, output_size=tokens)
    position = torch.arange(tokens, device=query.device) - bounds[sequence]

    def padded(tensor: Any) -> Any:  # (1, heads, tokens, dim) -> (sequences, heads, longest, dim)
        out = tensor.new_zeros(len(lengths), longest, heads, dim)
        out[sequence, position] = tensor[0].transpose(0, 1)
        return out.transpose(1, 2)

    keep = (torch.arange(longest, device=query.device)[None, :] < lengths[:, None])[:, None, None, :]
    out = functional.scaled_dot_product_attention(
        padded(query), padded(key), padded(value), attn_mask=keep, dropout_p=dropout, scale=scaling
    )
    return out.transpose(1, 2)[sequence, position].unsqueeze(0), None


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
