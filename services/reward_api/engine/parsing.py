"""Reading a completion, in linear time, once per sample.

The reference implementation reads completions with regular expressions such as
``<answer>(.*?)</answer>`` and ``\\[\\s*{.*?"bbox_2d".*?"label".*?}\\s*\\]``. On hostile text (a
megabyte of ``<answer>`` or ``[{"bbox_2d"`` fragments) Python's backtracking engine makes those
quadratic or worse, which would let one sample stall a training step. Every scanner here computes
exactly what ``re`` computes for those patterns (DOTALL, ``re.finditer``'s non-overlapping
left-to-right order, ``re.search``'s leftmost match, ``\\s`` = ``str.isspace``) with ``str.find``
loops that never revisit a character, and tests/engine/test_parsing.py checks that they agree
with ``re`` on many random strings of the tag and fence alphabet.

:class:`ParsedCompletion` holds the views the rewards need. Each is a ``cached_property``: built
the first time a reward asks for it and shared by every reward of that sample.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from .boxes import Box, box_problem
from .repair import repair_box_list

__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "FENCE",
    "JSON_FENCE_OPEN",
    "REPAIR_MAX_CHARS",
    "BoxList",
    "ParsedCompletion",
    "Prediction",
    "RepairBudget",
    "RepairBudgetSpent",
    "box_list",
    "first_bare_box_list",
    "first_block",
    "format_matches",
    "iter_blocks",
    "join_lines",
    "last_answer_span",
    "last_block",
    "load_json",
    "non_list_size",
    "normalise_for_weighted_sum",
    "normalise_twice_for_weighted_sum",
    "read_predictions",
    "repair_json",
    "repetition_box_list",
]

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
JSON_FENCE_OPEN, FENCE = "```json", "```"
BBOX_KEY, LABEL_KEY = '"bbox_2d"', '"label"'

# json_repair (0.64.5) is quadratic on some malformed input: measured on this machine, 10 KB of
# '[{"bbox_2d"' takes 1.1 s, 100 KB takes 106 s, and 1 KB of '{' or of '"a' up to 0.12 s. A block
# json.loads rejects is only handed to it when it is at most this long (about 18 boxes); a longer
# one counts as unparsable, so repetition falls back to word 6-grams. Documented as a departure.
REPAIR_MAX_CHARS = 1024

# A newline preceded by white space (weighted_sum normalisation): the same matches as
# r"(?<=\s)[\n\r]", but led by the character class, so the engine skips to the newlines with its
# fast charset search and only checks the character before them (2.4x faster). Linear: each
# position is tried once, with a fixed-width lookbehind.
_NEWLINE_AFTER_SPACE = re.compile(r"[\n\r](?<=\s[\n\r])")


# ---------------------------------------------------------------- scanners


def iter_blocks(text: str, opening: str, closing: str) -> Iterator[tuple[int, int]]:
    """Content spans ``(start, end)`` of ``re.finditer(opening + "(.*?)" + closing, text, DOTALL)``.

    Lazy ``.*?`` ends a match at the first ``closing`` after the opening; the next search starts
    where that match ended. Without a closing after an opening no later opening can match either,
    so the scan stops: every character is looked at a bounded number of times.
    """
    position = 0
    while True:
        start = text.find(opening, position)
        if start < 0:
            return
        content_start = start + len(opening)
        end = text.find(closing, content_start)
        if end < 0:
            return
        yield content_start, end
        position = end + len(closing)


def first_block(text: str, opening: str, closing: str) -> str | None:
    """Group 1 of ``re.search(opening + "(.*?)" + closing, text, DOTALL)``, or None."""
    for start, end in iter_blocks(text, opening, closing):
        return text[start:end]
    return None


def last_span(text: str, opening: str, closing: str) -> tuple[int, int] | None:
    """Span of group 1 of the last ``re.finditer(opening + "(.*?)" + closing, text, DOTALL)`` match."""
    last = deque(iter_blocks(text, opening, closing), maxlen=1)  # runs the iterator, keeps its last span
    return last[0] if last else None


def last_block(text: str, opening: str, closing: str) -> str | None:
    """Group 1 of the last ``re.finditer(opening + "(.*?)" + closing, text, DOTALL)`` match, or None."""
    span = last_span(text, opening, closing)
    return None if span is None else text[span[0] : span[1]]


def last_answer_span(text: str) -> tuple[int, int] | None:
    """Content span of the last ``<answer>(.*?)</answer>`` match, unstripped."""
    return last_span(text, ANSWER_OPEN, ANSWER_CLOSE)


def _skip_space(text: str, position: int) -> int:
    """First index at or after ``position`` that is not ``\\s`` (``str.isspace``)."""
    n = len(text)
    while position < n and text[position].isspace():
        position += 1
    return position


def format_matches(text: str) -> bool:
    """``re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", text, re.DOTALL) is not None``.

    A full match exists iff the text starts with ``<think>``, ends with ``</answer>``, and some
    ``</think>`` (at or after the opening) is followed, after its white space, by an ``<answer>``
    that ends no later than the final ``</answer>`` starts. ``\\s*`` must swallow the whole white
    space run because ``<`` is not white space. The runs after distinct ``</think>`` are disjoint,
    so trying every ``</think>`` stays linear.
    """
    if not (text.startswith(THINK_OPEN) and text.endswith(ANSWER_CLOSE)):
        return False
    final_close = len(text) - len(ANSWER_CLOSE)
    position = len(THINK_OPEN)
    while True:
        close = text.find(THINK_CLOSE, position)
        if close < 0:
            return False
        answer = _skip_space(text, close + len(THINK_CLOSE))
        if answer + len(ANSWER_OPEN) > final_close:
            return False  # later </think> only move the <answer> further right
        if text.startswith(ANSWER_OPEN, answer):
            return True
        position = close + 1


def _object_list_start(text: str) -> int:
    """Leftmost ``i`` where ``\\[\\s*{`` matches, or -1."""
    position = 0
    while True:
        bracket = text.find("[", position)
        if bracket < 0:
            return -1
        brace = _skip_space(text, bracket + 1)
        if brace < len(text) and text[brace] == "{":
            return bracket
        position = bracket + 1


def _list_end_after(text: str, position: int) -> int:
    """End (exclusive) of the first ``}\\s*\\]`` whose ``}`` is at or after ``position``, or -1."""
    while True:
        brace = text.find("}", position)
        if brace < 0:
            return -1
        bracket = _skip_space(text, brace + 1)
        if bracket < len(text) and text[bracket] == "]":
            return bracket + 1
        position = brace + 1


def first_bare_box_list(text: str) -> str | None:
    """Group 0 of ``re.search(r'\\[\\s*{.*?"bbox_2d".*?"label".*?}\\s*\\]', text, re.DOTALL)``.

    Lazy quantifiers pick the earliest ``"bbox_2d"``, then the earliest ``"label"`` after it, then
    the earliest ``}\\s*]`` after that; each is a monotone function of where the previous one is,
    so if the leftmost ``[\\s*{`` cannot complete a match, no later one can either.
    """
    start = _object_list_start(text)
    if start < 0:
        return None
    brace = _skip_space(text, start + 1)
    bbox = text.find(BBOX_KEY, brace + 1)
    if bbox < 0:
        return None
    label = text.find(LABEL_KEY, bbox + len(BBOX_KEY))
    if label < 0:
        return None
    end = _list_end_after(text, label + len(LABEL_KEY))
    return None if end < 0 else text[start:end]


# ---------------------------------------------------------------- weighted_sum normalisation


def join_lines(text: str) -> str:
    """Delete a newline (``\\n`` or ``\\r``) preceded by white space; make any other a space.

    "Preceded" means in the original text, which is also what the reference's sequence of four
    ``re.sub`` calls amounts to (tests check both agree).
    """
    return _NEWLINE_AFTER_SPACE.sub("", text).replace("\n", " ").replace("\r", " ")


def normalise_for_weighted_sum(text: str) -> str:
    """weighted_sum step 1: last answer block (else all), lines joined, stripped, no trailing '.', lower case."""
    span = last_answer_span(text)
    if span is not None:
        text = text[span[0] : span[1]]
    return join_lines(text).strip().rstrip(".").lower()


def normalise_twice_for_weighted_sum(text: str) -> str:
    """weighted_sum version 2, step 1: the normalisation applied twice, as the reference does (its
    accuracy and cosine rewards normalise the completion, then its detection_score normalises again).
    The second pass sees lower-case text, so ``<ANSWER>...</ANSWER>`` becomes an answer block."""
    return normalise_for_weighted_sum(normalise_for_weighted_sum(text))


# ---------------------------------------------------------------- JSON


def load_json(text: str) -> tuple[Any, bool]:
    """``(value, True)`` when ``json.loads`` accepts ``text``, else ``(None, False)``.

    ``json.loads`` accepts NaN and Infinity (a box holding them is invalid, not the list). Deep
    nesting raises RecursionError and an integer of more than 4300 digits ValueError: both mean
    "does not parse".
    """
    try:
        return json.loads(text), True
    except (ValueError, RecursionError):
        return None, False


@dataclass(frozen=True)
class BoxList:
    """A text's box list: ``items`` ([] unless the fenced JSON is a list) and why it is empty.

    ``failure`` is None, or "no_json_fence", "invalid_json" or "not_a_list"; ``value`` is the
    parsed JSON when it is not a list (version 2 counts what it iterates to, :func:`non_list_size`).
    """

    items: list
    failure: str | None = None
    value: Any = None


def non_list_size(box_list: BoxList) -> int | None:
    """Version 2: how many predictions a fenced JSON value that is not a list stands for, or None
    for a list (or no value). The reference loops over whatever the JSON holds: an object yields
    its keys, a string its characters, predictions that are not objects and so match nothing (a
    malformed answer is not "none"); a number, ``true``/``false`` or ``null`` yields nothing (its
    loop raises and it keeps []). Only the count matters, so nothing is built: a 30 MB string costs
    no memory."""
    value = box_list.value
    if box_list.failure != "not_a_list":
        return None
    return len(value) if isinstance(value, (dict, str)) else 0


def box_list(text: str, which: str = "last", load: Callable[[str], tuple[Any, bool]] = load_json) -> BoxList:
    """The box list of ``text``: its last (or first) ```` ```json(.*?)``` ```` block, stripped, as JSON.

    ``load``: :func:`load_json`, or a memoised equivalent (see ParsedCompletion._load_json)."""
    block = last_block(text, JSON_FENCE_OPEN, FENCE) if which == "last" else first_block(text, JSON_FENCE_OPEN, FENCE)
    if block is None:
        return BoxList([], "no_json_fence")
    value, ok = load(block.strip())
    if not ok:
        return BoxList([], "invalid_json")
    if not isinstance(value, list):
        return BoxList([], "not_a_list", value)
    return BoxList(value)


def repair_json(text: str) -> Any:
    """json_repair's reading of ``text``; None when it fails (a third-party repairer on hostile text,
    RecursionError included: "unparsable")."""
    import json_repair  # here, not at the top: the trainer reads ground truth with this module, without it

    try:
        return json_repair.loads(text)
    except Exception:
        return None


class RepairBudgetSpent(Exception):
    """The request's json_repair time is spent: the sample that needs more is not scored."""


class RepairBudget:
    """:func:`repair_json` within a time budget shared by a whole request.

    json_repair can take 0.35 s on 1 KB (``"1{" * 512``), so the per-block size cap alone let 4,096
    such samples cost a worker 24 minutes. Once ``seconds`` are spent, a further repair raises
    RepairBudgetSpent: that sample is not scored (never scored differently).
    """

    def __init__(self, seconds: float) -> None:
        self.left = seconds

    def __call__(self, text: str) -> Any:
        if self.left <= 0:
            raise RepairBudgetSpent
        start = time.perf_counter()
        try:
            return repair_json(text)
        finally:
            self.left -= time.perf_counter() - start


def _load_or_repair(
    text: str, load: Callable[[str], tuple[Any, bool]] = load_json, repair: Callable[[str], Any] = repair_json
) -> Any:
    """json.loads, else json_repair for blocks up to REPAIR_MAX_CHARS; None when neither reads it."""
    value, ok = load(text)
    if ok:
        return value
    if len(text) > REPAIR_MAX_CHARS:
        return None
    return repair(text)


def repetition_box_list(
    text: str, load: Callable[[str], tuple[Any, bool]] = load_json, repair: Callable[[str], Any] = repair_json
) -> tuple[str | None, list | None]:
    """repetition step 2: ``(source, items)``; items is the parsed non-empty list, else None.

    source: "json_fence", "fence", "bare_list" (which pattern found the block) or None;
    ``load`` as for :func:`box_list`; ``repair``: :func:`repair_json` or a :class:`RepairBudget`.
    """
    block = first_block(text, JSON_FENCE_OPEN, FENCE)
    source = "json_fence"
    if block is None:
        block, source = first_block(text, FENCE, FENCE), "fence"
    if block is None:
        block, source = first_bare_box_list(text), "bare_list"
    if block is None:
        return None, None
    value = _load_or_repair(block.strip(), load, repair)
    return source, (value if isinstance(value, list) and value else None)


def repetition_box_list_v2(
    text: str, load: Callable[[str], tuple[Any, bool]] = load_json
) -> tuple[str | None, list | None]:
    """repetition version 2, step 2: as :func:`repetition_box_list`, except that

    * a plain ```` ``` ``` ```` fence that is empty once stripped goes on to the bare-list pattern,
      as the reference does (an empty ```` ```json ```` block does not: it is "nothing found");
    * JSON that does not parse is repaired by :func:`repair.repair_box_list` (linear, any length)
      instead of json_repair up to 1,024 characters.
    """
    block = first_block(text, JSON_FENCE_OPEN, FENCE)
    source = "json_fence"
    if block is None:
        block, source = first_block(text, FENCE, FENCE), "fence"
        if block is not None and not block.strip():
            block = None
    if block is None:
        block, source = first_bare_box_list(text), "bare_list"
    if block is None:
        return None, None
    block = block.strip()
    value, ok = load(block)
    if not ok:
        value = repair_box_list(block)
    return source, (value if isinstance(value, list) and value else None)


class Prediction(NamedTuple):
    """One item of a box list as the detection rewards read it.

    ``label`` is None for an item that is not an object or has no string label; ``box`` is the
    valid box, or None with ``box_problem`` saying why not. (A NamedTuple, not a frozen
    dataclass: one is built for every item of every completion, five times faster.)
    """

    is_object: bool
    label: str | None
    box: Box | None
    box_problem: str | None


def read_predictions(items: list) -> tuple[Prediction, ...]:
    predictions = []
    for item in items:
        if not isinstance(item, dict):
            predictions.append(Prediction(False, None, None, "item is not an object"))
            continue
        label = item.get("label")
        problem = box_problem(item.get("bbox_2d"))
        box = tuple(item["bbox_2d"]) if problem is None else None
        predictions.append(Prediction(True, label if isinstance(label, str) else None, box, problem))
    return tuple(predictions)


# ---------------------------------------------------------------- the per-sample views


class cached_property:  # noqa: N801 - named after the functools decorator it stands in for
    """functools.cached_property without the lock Python 3.11 takes on every first access (it
    cost more than some of the views it guards). A ParsedCompletion belongs to one request's
    thread; were two threads to race, both would compute the same value."""

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        # Stored in the instance dict, which then shadows this (non-data) descriptor.
        value = obj.__dict__[self.name] = self.func(obj)
        return value


class ParsedCompletion:
    """Every view of one completion the rewards need, each computed at most once.

    The views are read-only: the answer's box list and repetition's block are usually the same
    text, and then share one parsed JSON value (:meth:`_load_json`).
    """

    def __init__(self, text: str, repair: Callable[[str], Any] = repair_json) -> None:
        """``repair``: how repetition version 1 repairs malformed JSON (json_repair; a request's
        RepairBudget in the service). Version 2 has its own linear repair and needs no budget."""
        self.text = text
        self._repair = repair
        self._json: dict[str, tuple[Any, bool]] = {}

    def _load_json(self, text: str) -> tuple[Any, bool]:
        """:func:`load_json`, once per distinct text within this completion."""
        if text not in self._json:
            self._json[text] = load_json(text)
        return self._json[text]

    @cached_property
    def answer(self) -> str | None:
        """The last answer block, stripped; None when the completion has none."""
        span = last_answer_span(self.text)
        return None if span is None else self.text[span[0] : span[1]].strip()

    @cached_property
    def answer_box_list(self) -> BoxList:
        """The box list of the answer block (last ```json fence); failure "no_answer" without one."""
        if self.answer is None:
            return BoxList([], "no_answer")
        return box_list(self.answer, "last", self._load_json)

    @property
    def answer_items(self) -> list:
        """The answer's box list items ([] when absent or unparsable)."""
        return self.answer_box_list.items

    @cached_property
    def answer_predictions(self) -> tuple[Prediction, ...]:
        """The answer's box list items, each checked once (label, box validity)."""
        return read_predictions(self.answer_items)

    @cached_property
    def answer_non_list_size(self) -> int | None:
        """Version 2: the predictions the answer's fenced value stands for when it is not a list."""
        return non_list_size(self.answer_box_list)

    @cached_property
    def format_ok(self) -> bool:
        return format_matches(self.text)

    @cached_property
    def ws_normalised(self) -> str:
        """The completion normalised as weighted_sum step 1 says."""
        return normalise_for_weighted_sum(self.text)

    @cached_property
    def ws_box_list(self) -> BoxList:
        """The box list of the FIRST ```json fence of the normalised completion."""
        return box_list(self.ws_normalised, "first", self._load_json)

    @property
    def ws_items(self) -> list:
        return self.ws_box_list.items

    @cached_property
    def ws_normalised_v2(self) -> str:
        """The completion normalised twice (weighted_sum version 2)."""
        return normalise_twice_for_weighted_sum(self.text)

    @cached_property
    def ws_box_list_v2(self) -> BoxList:
        """Version 2: the first ```json block of the twice-normalised text."""
        return box_list(self.ws_normalised_v2, "first", self._load_json)

    @property
    def ws_items_v2(self) -> list:
        return self.ws_box_list_v2.items

    @property
    def ws_non_list_size_v2(self) -> int | None:
        return non_list_size(self.ws_box_list_v2)

    @cached_property
    def _repetition(self) -> tuple[str | None, list | None]:
        return repetition_box_list(self.text, self._load_json, self._repair)

    @property
    def repetition_source(self) -> str | None:
        return self._repetition[0]

    @property
    def repetition_items(self) -> list | None:
        """The non-empty list repetition step 2 finds, or None (then words are used)."""
        return self._repetition[1]

    @cached_property
    def repetition_v2(self) -> tuple[str | None, list | None]:
        """Version 2's ``(source, items)`` (:func:`repetition_box_list_v2`)."""
        return repetition_box_list_v2(self.text, self._load_json)

    @cached_property
    def words(self) -> list[str]:
        """The lower-cased completion split on white space."""
        return self.text.lower().split()
