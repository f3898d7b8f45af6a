"""Box validity, shared by the ground truth reader and every reward that looks at boxes.

A valid box (reward-spec "valid box") is a list of exactly four finite numbers ``x1, y1, x2, y2``
with ``x2 >= x1`` and ``y2 >= y1``. JSON ``true``/``false`` are not numbers (Python's ``bool`` is
an ``int`` subclass, so it is refused explicitly) and an integer too large for a double is not
finite (it would become ``inf`` the moment it is converted for COCO arithmetic).
"""

from __future__ import annotations

import math
from typing import Any

Box = tuple[Any, Any, Any, Any]  # the four numbers exactly as parsed (int or float)

__all__ = ["Box", "box_problem", "is_finite_number", "valid_box"]


_EXACT_INT = 2**53  # ints this small are finite as doubles without trying the conversion


def is_finite_number(value: Any) -> bool:
    """True for an int or float (not bool) that is finite as a double."""
    kind = type(value)
    if kind is float:  # the common cases first: this runs for every coordinate of every box
        return math.isfinite(value)
    if kind is int and -_EXACT_INT <= value <= _EXACT_INT:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return False
        return True
    return math.isfinite(value)


def box_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid box, or None when it is one."""
    if not isinstance(value, list):
        return "is not a list" if value is not None else "is missing"
    if len(value) != 4:
        return f"has {len(value)} numbers, not 4"
    for v in value:
        # is_finite_number's two common cases inline: this runs for every coordinate of every box.
        kind = type(v)
        if kind is float:
            if math.isfinite(v):
                continue
        elif kind is int and -_EXACT_INT <= v <= _EXACT_INT:
            continue
        if not is_finite_number(v):
            return "holds something that is not a finite number"
    x1, y1, x2, y2 = value
    if x2 < x1 or y2 < y1:
        return "is inverted (x2 < x1 or y2 < y1)"
    return None


def valid_box(value: Any) -> Box | None:
    """The box as a tuple of its four numbers (types kept), or None when it is not valid."""
    if box_problem(value) is not None:
        return None
    return tuple(value)
