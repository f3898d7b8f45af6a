"""A linear-time repair of box lists that ``json.loads`` rejects (repetition, version 2).

The reference repairs any malformed block with json_repair, which is quadratic on hostile text
(100 KB of ``[{"bbox_2d"`` took 106 s), so version 1 only repaired blocks of at most 1,024
characters and a realistic 25-box answer was already longer. Version 2 repairs the shape models
actually produce, at any length, in one left-to-right pass:

* a JSON list ``[ item, item, ... ]`` whose items are complete JSON values (read with the
  standard decoder, each once), with trailing commas allowed;
* that stops anywhere: after an item, after a comma, or inside the last item, which must then be
  an object cut short (``{"bbox_2d": [10, 20, 3``): it is completed the way json_repair completes
  it (a cut key is dropped, a key without value gets ``""``, a cut string or number keeps what was
  written, a cut list keeps its numbers; ``{`` alone is dropped; a cut first key becomes the list
  ``[key]``);
* a closed list followed only by white space.

Anything else (single quotes, missing commas, text after the list, a cut number with an exponent,
an escape inside a cut string, ...) is declined (None), and repetition falls back to word 6-grams:
a documented departure. tests/engine/test_repair.py checks, on every prefix of realistic box lists
(compact and pretty-printed), that whenever this repair answers, json_repair 0.64.5 gives the same
value.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["repair_box_list"]

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
_NUMBER_PREFIX = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]*)?")
_CUT = object()  # "the text ended here"


class _Declined(Exception):
    """The text is not a box list that this repair handles."""


def _cut_string_value(body: str) -> str:
    """The content of a string cut short: decoded, except a cut escape at its end (``\\`` or
    ``\\u00``), which json_repair keeps as written."""
    for keep in range(6):  # the longest cut escape is "\\u" + 3 hex digits
        head, tail = body[: len(body) - keep], body[len(body) - keep :]
        if keep and not tail.startswith("\\"):
            continue
        try:
            return json.loads('"' + head + '"') + tail
        except json.JSONDecodeError:
            continue
    raise _Declined


def repair_box_list(text: str) -> list | None:
    """The list a malformed (usually cut off) box list means, or None when this repair declines.

    >>> repair_box_list('[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}, {"bbox_2d": [1, 2')
    [{'bbox_2d': [1, 2, 3, 4], 'label': 'cat'}, {'bbox_2d': [1, 2]}]
    >>> repair_box_list('[{"bbox_2d": [1, 2, 3, 4], "label": "ca')
    [{'bbox_2d': [1, 2, 3, 4], 'label': 'ca'}]
    >>> repair_box_list("[{'bbox_2d': [1, 2, 3, 4]}]") is None  # single quotes: declined
    True
    """
    try:
        return _List(text).read()
    except (_Declined, RecursionError, ValueError):
        return None


class _List:
    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)

    def space(self, position: int) -> int:
        match = _SPACE.match(self.text, position)
        assert match is not None  # a run of zero or more spaces matches anywhere
        return match.end()

    def read(self) -> list:
        position = self.space(0)
        if position >= self.n or self.text[position] != "[":
            raise _Declined
        items: list = []
        position = self.space(position + 1)
        while position < self.n:
            char = self.text[position]
            if char == "]":
                if self.space(position + 1) != self.n:
                    raise _Declined  # text after the list: json_repair's rules there vary
                return items
            try:
                value, position = _DECODER.raw_decode(self.text, position)
            except json.JSONDecodeError:
                cut = self.cut_object(position)  # the last item, cut short, or declined
                if cut is not None:
                    items.append(cut)
                return items
            items.append(value)
            position = self.space(position)
            if position < self.n and self.text[position] == ",":
                position = self.space(position + 1)
            elif position < self.n and self.text[position] != "]":
                raise _Declined  # a missing comma
        return items  # cut after an item or a comma

    # ------------------------------------------------------------ the last item, cut short

    def cut_object(self, position: int) -> Any:
        """The value json_repair makes of an object that runs to the end of the text, else declined.

        Returns None when the item disappears (json_repair drops ``{`` and ``{"``).
        """
        if self.text[position] != "{":
            raise _Declined
        members: dict = {}
        position = self.space(position + 1)
        first = True
        while True:
            if position >= self.n:
                return members if members else None
            if self.text[position] != '"':
                raise _Declined
            key, position = self.string(position)
            if key is _CUT or (position := self.space(position)) >= self.n:
                # a cut or colon-less key: dropped, except as the first member, where json_repair
                # reads "{"key" as a one-string list (and drops an empty key)
                name = self._cut_text if key is _CUT else key
                if first:
                    return [name] if name else None
                return members
            if self.text[position] != ":":
                raise _Declined
            position = self.space(position + 1)
            if position >= self.n:
                members[key] = ""
                return members
            value, position = self.value(position)
            if value is _CUT:
                return members
            members[key] = value[0]
            if position >= self.n:
                return members
            position = self.space(position)
            if position >= self.n:
                return members
            if self.text[position] != ",":
                raise _Declined  # a closed object would have been read whole: something else is wrong
            position = self.space(position + 1)
            first = False

    def string(self, position: int) -> tuple[Any, int]:
        """A JSON string at ``position``: (value, end) when closed, (_CUT, n) when the text ends in it
        (then ``self._cut_text`` is what json_repair keeps: the escapes written in full decoded, a
        cut escape at the end kept as written)."""
        try:
            return _DECODER.raw_decode(self.text, position)
        except json.JSONDecodeError:
            self._cut_text = _cut_string_value(self.text[position + 1 :])  # declined unless cut short
            return _CUT, self.n

    def value(self, position: int) -> tuple[Any, int]:
        """((value,), end) of a member's value, ((cut value,), n) for a value cut short but kept,
        or (_CUT, n) for one json_repair drops."""
        char = self.text[position]
        if char == '"':
            value, end = self.string(position)
            return ((self._cut_text,), self.n) if value is _CUT else ((value,), end)
        if char == "[":
            try:
                value, end = _DECODER.raw_decode(self.text, position)
                return (value,), end
            except json.JSONDecodeError:
                return (self.cut_numbers(position + 1),), self.n
        if char == "-" or char.isdigit():
            match = _NUMBER_PREFIX.match(self.text, position)
            if self.text[position:] == "-":
                return _CUT, self.n  # json_repair drops a member whose value is a lone '-'
            if match is not None and match.end() == self.n:
                digits = match.group()  # a number that ends the text, maybe cut: kept as written
                return (float(digits) if "." in digits else int(digits),), self.n
        value, end = _DECODER.raw_decode(self.text, position)  # JSONDecodeError: declined by the caller
        return (value,), end

    def cut_numbers(self, position: int) -> list:
        """A list of numbers cut short at the end of the text: the numbers written so far."""
        numbers: list = []
        while True:
            position = self.space(position)
            if position >= self.n:
                return numbers
            match = _NUMBER_PREFIX.match(self.text, position)
            if match is None:
                if self.text[position:] == "-":
                    return numbers
                raise _Declined
            end = match.end()
            digits = match.group()
            if end < self.n and self.text[end] in "eE":
                raise _Declined
            numbers.append(float(digits) if "." in digits else int(digits))
            position = self.space(end)
            if position >= self.n:
                return numbers
            if self.text[position] != ",":
                raise _Declined
            position += 1
