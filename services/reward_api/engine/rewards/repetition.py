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

Version 2 (the default) finds and reads the box list as the reference does where version 1 did not:

* a plain ```` ``` ``` ```` fence that is empty goes on to the bare-list pattern (version 1 stopped);
* JSON that does not parse is repaired at any length by our own linear-time repair
  (``repair.repair_box_list``), equal to json_repair on every cut-off box list; so a realistic
  malformed list of hundreds of boxes is read as a list, not as words (version 1 repaired only up
  to 1,024 characters).

Departures from the reference (both versions): it crashed on a list item that is not an object
(such items are skipped) and on a 5,000-digit integer or 3,000 nested brackets (unparsable here:
word 6-grams); version 2 does not repair malformed JSON other than a box list cut short (single
quotes, missing commas, text after the list: word 6-grams), where json_repair would guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..parsing import ParsedCompletion
from . import RewardInput

__all__ = ["NGRAM", "RepetitionResult", "repetition", "repetition_reward", "score", "score_v2"]

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


def repetition(parsed: ParsedCompletion, version: str = "2") -> RepetitionResult:
    """The repetition penalty of one completion at ``version`` ("1" or "2") and what it counted."""
    if parsed.text == "":
        return RepetitionResult(0.0, "empty")
    if version == "1":
        source, items = parsed.repetition_source, parsed.repetition_items
    else:
        source, items = parsed.repetition_v2
    if items is not None:
        keys = [key for key in map(_item_key, items) if key is not None]
        if not keys:
            return RepetitionResult(0.0, source or "")
        distinct = len(set(keys))
        return RepetitionResult(_penalty(distinct, len(keys)), source or "", len(keys), distinct)
    words = parsed.words
    if len(words) < NGRAM:
        return RepetitionResult(0.0, "words", 0, 0)
    # The shifted copies get shorter: zip stops at the shortest, leaving only whole n-grams.
    grams = list(zip(*(words[i:] for i in range(NGRAM)), strict=False))
    distinct = len(set(grams))
    return RepetitionResult(_penalty(distinct, len(grams)), "words", len(grams), distinct)


def repetition_reward(parsed: ParsedCompletion, version: str = "2") -> float:
    """The repetition penalty of one completion at ``version``.

    >>> from services.reward_api.engine.parsing import ParsedCompletion
    >>> box = '{"bbox_2d": [1, 2, 3, 4], "label": "cat"}'
    >>> repetition_reward(ParsedCompletion(f"```json\\n[{box}, {box}, {box}]\\n```"))
    -0.6666666666666667
    >>> cut = "```json\\n[" + ", ".join([box] * 40) + ', {"bbox_2d": [1, 2\\n```'  # 1,700 characters, cut off
    >>> repetition_reward(ParsedCompletion(cut)), round(repetition_reward(ParsedCompletion(cut), version="1"), 4)
    (-0.975, -0.9607)
    >>> repetition_reward(ParsedCompletion("the cat sat on the mat and the cat sat on the mat"))
    -0.125
    """
    return repetition(parsed, version).value


def shared_result(inp: RewardInput, version: str = "2") -> RepetitionResult:
    """The sample's repetition result, computed once (the score and the explain details share it)."""
    return inp.shared(f"repetition@{version}", lambda i: repetition(i.parsed, version))


def score(inp: RewardInput) -> float:
    return shared_result(inp, "1").value


def score_v2(inp: RewardInput) -> float:
    return shared_result(inp, "2").value
