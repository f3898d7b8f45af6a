"""repetition: a penalty in [-1, 0] for repeated detections or repeated text.

1. Empty completion: 0.0.
2. A box list is looked for in the raw completion: the first ```` ```json(.*?)``` ```` block, else
   the first ```` ```(.*?)``` ```` block, else the first match of
   ``\\[\\s*{.*?"bbox_2d".*?"label".*?}\\s*\\]`` (``parsing.repetition_box_list``, linear scans).
   It is read with ``json.loads``; malformed JSON is repaired with json_repair, as the reference
   does, but only for blocks of at most ``parsing.REPAIR_MAX_CHARS`` (1024) characters, because
   json_repair is quadratic on hostile text (100 KB took 106 s); a longer malformed block counts
   as unparsable.
3. A non-empty list: items = ``str(bbox_2d) + "_" + str(label)`` for every object holding both
   keys (items that are not objects are skipped); none: 0.0; else ``-(1 - distinct / items)``.
4. Otherwise: the lower-cased completion's words; fewer than 6: 0.0; else
   ``-(1 - distinct 6-grams / 6-grams)``.

A penalty of zero is returned as ``0.0``, never ``-0.0``.

Departure from the reference: it crashed on a list item that is not an object; such items are
skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..parsing import ParsedCompletion
from . import RewardInput

__all__ = ["NGRAM", "RepetitionResult", "repetition", "repetition_reward", "score"]

NGRAM = 6


@dataclass(frozen=True)
class RepetitionResult:
    value: float
    source: str  # "empty", "json_fence", "fence", "bare_list" (a box list) or "words"
    total: int = 0  # box items, or 6-grams
    distinct: int = 0

    def details(self) -> dict:
        return {"source": self.source, "total": self.total, "distinct": self.distinct, "value": self.value}


def _penalty(distinct: int, total: int) -> float:
    return -(1 - distinct / total) + 0.0  # + 0.0 turns -0.0 into 0.0


def _item_key(item) -> str | None:
    """``str(bbox_2d) + "_" + str(label)``, or None for an item that does not count."""
    if not isinstance(item, dict) or "bbox_2d" not in item or "label" not in item:
        return None
    try:
        return f"{item['bbox_2d']!s}_{item['label']!s}"
    except (RecursionError, ValueError):  # str() of a nesting too deep, or of a 4300+ digit int
        return None


def repetition(parsed: ParsedCompletion) -> RepetitionResult:
    """The repetition penalty of one completion and what it counted."""
    if parsed.text == "":
        return RepetitionResult(0.0, "empty")
    items = parsed.repetition_items
    if items is not None:
        keys = [key for key in map(_item_key, items) if key is not None]
        if not keys:
            return RepetitionResult(0.0, parsed.repetition_source or "")
        distinct = len(set(keys))
        return RepetitionResult(_penalty(distinct, len(keys)), parsed.repetition_source or "", len(keys), distinct)
    words = parsed.words
    if len(words) < NGRAM:
        return RepetitionResult(0.0, "words", 0, 0)
    grams = list(zip(*(words[i:] for i in range(NGRAM))))
    distinct = len(set(grams))
    return RepetitionResult(_penalty(distinct, len(grams)), "words", len(grams), distinct)


def repetition_reward(parsed: ParsedCompletion) -> float:
    return repetition(parsed).value


def shared_result(inp: RewardInput) -> RepetitionResult:
    """The sample's repetition result, computed once (the score and the explain details share it)."""
    return inp.shared("repetition", lambda i: repetition(i.parsed))


def score(inp: RewardInput) -> float:
    return shared_result(inp).value
