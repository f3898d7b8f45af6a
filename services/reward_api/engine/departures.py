"""Every difference between our rewards and the published VLM-R1 reference, with an example each.

The reference is ``src/open-r1-multimodal/src/open_r1/grpo_jsonl.py`` of om-ai-lab/VLM-R1 (commit
90052f4), called the way its training pipeline calls it (solutions wrapped as ``<answer> ... </answer>``).
A :class:`Departure` says what the reference does, what we do, why, and shows it on one sample with
both values. ``versions`` says which reward versions depart: most departures are choices kept in
both versions (hack resistance, no crash, linear time); the ones marked for version 1 only are
where version 1 misread the reference, mended in version 2.

This is the one list: the registry attaches each departure to the rewards and versions it names
(``GET /v1/rewards``), :func:`markdown_table` renders it for README.md and docs/reward-spec.md (a
test checks both hold exactly this table), and tests/engine/test_departures.py scores every example
and checks our values, and that version 2 gives the reference's value on every example of a
version-1-only departure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEPARTURES", "Departure", "departures_of", "markdown_table"]

REWARD_NAMES = ("format", "ap", "ap50", "od_length", "weighted_sum", "repetition", "cosine")


@dataclass(frozen=True)
class Departure:
    """Where our rewards deliberately differ from the published reference implementation.

    ``example``: one sample (completion, solution, completion_tokens) that shows it, ``shown`` the
    same in one line; ``reference_values``/``our_values``: per reward, what the reference gives (a
    number, or "raises ...") and what the listed versions give (None: the sample is refused, null).
    """

    id: str
    versions: tuple[str, ...]
    reference: str
    here: str
    why: str
    example: Mapping[str, Any]
    shown: str
    reference_values: Mapping[str, float | str]
    our_values: Mapping[str, float | None]

    @property
    def rewards(self) -> tuple[str, ...]:
        return tuple(name for name in REWARD_NAMES if name in self.our_values)

    def describe(self) -> dict[str, Any]:
        """JSON-ready (GET /v1/rewards)."""
        return {
            "id": self.id,
            "versions": list(self.versions),
            "reference": self.reference,
            "here": self.here,
            "why": self.why,
            "example": self.shown,
            "reference_values": dict(self.reference_values),
            "our_values": dict(self.our_values),
        }


# ---------------------------------------------------------------- the examples' pieces

_CAT = {"bbox_2d": [10, 10, 110, 110], "label": "cat"}
_CAT_JSON = json.dumps(_CAT)


def _fenced(body: str) -> str:
    return f"```json\n{body}\n```"


def _answer(body: str) -> str:
    return f"<think>ok</think><answer>{body}</answer>"


_CAT_SOLUTION = f"<answer> {_fenced('[' + _CAT_JSON + ']')} </answer>"
_CAT_SHOWN = "solution: one cat at [10, 10, 110, 110]"


def _sample(completion: str, solution: Any = _CAT_SOLUTION, completion_tokens: int = 512) -> dict[str, Any]:
    return {"completion": completion, "solution": solution, "completion_tokens": completion_tokens}


def _boxes(*items: str) -> str:
    return _answer(_fenced("[" + ", ".join(items) + "]"))


_HACK = "a policy can learn to exploit it"
_NO_CRASH = "a reward that raises stops training"

DEPARTURES: tuple[Departure, ...] = (
    # -------------------------------------------- kept in both versions
    Departure(
        "nan_boxes",
        ("1", "2"),
        "pycocotools matches predicted boxes of [NaN, NaN, NaN, NaN] (NaN overlaps count as matches)",
        "a box holding NaN or Infinity is invalid: a false positive",
        _HACK,
        _sample(_boxes('{"bbox_2d": [NaN, NaN, NaN, NaN], "label": "cat"}')),
        f'answer [{{"bbox_2d": [NaN, NaN, NaN, NaN], "label": "cat"}}]; {_CAT_SHOWN}',
        {"ap": 0.9999999999999998, "ap50": 0.9999999999999999, "od_length": 0.9999999999999998},
        {"ap": 0.0, "ap50": 0.0, "od_length": 0.0},
    ),
    Departure(
        "inverted_boxes",
        ("1", "2"),
        "pycocotools ignores a predicted box of negative area (x2 < x1 or y2 < y1, not both): a free extra guess",
        "an inverted box is invalid: a false positive",
        _HACK,
        _sample(_boxes('{"bbox_2d": [110, 10, 10, 110], "label": "cat"}', _CAT_JSON)),
        f'answer [{{"bbox_2d": [110, 10, 10, 110], "label": "cat"}}, <the cat>]; {_CAT_SHOWN}',
        {"ap": 0.9999999999999998, "ap50": 0.9999999999999999, "od_length": 0.4999999999999999},
        {"ap": 0.5, "ap50": 0.5, "od_length": 0.25},
    ),
    Departure(
        "malformed_boxes",
        ("1", "2"),
        "skips a prediction whose box raises (bbox_2d missing, null, strings, 3 numbers)",
        "such a prediction is a false positive (its label is a ground-truth label)",
        "a malformed box is a wrong answer, not a free one; one rule for every reward",
        _sample(_boxes('{"bbox_2d": [10, 10, 110], "label": "cat"}', _CAT_JSON)),
        f'answer [{{"bbox_2d": [10, 10, 110], "label": "cat"}}, <the cat>]; {_CAT_SHOWN}',
        {"ap": 0.9999999999999998, "ap50": 0.9999999999999999, "od_length": 0.4999999999999999},
        {"ap": 0.5, "ap50": 0.5, "od_length": 0.25},
    ),
    Departure(
        "five_numbers_or_booleans",
        ("1", "2"),
        "scores a box of 5 numbers on its first four, and reads true/false coordinates as 1/0",
        "a box is exactly 4 finite numbers (true/false are not numbers): anything else is invalid "
        "(a false positive in ap/ap50/od_length, overlapping nothing in weighted_sum)",
        "one box rule for every reward; the model is asked for x1, y1, x2, y2",
        _sample(_boxes('{"bbox_2d": [10, 10, 110, 110, 5], "label": "cat"}')),
        f'answer [{{"bbox_2d": [10, 10, 110, 110, 5], "label": "cat"}}]; {_CAT_SHOWN}',
        {"ap": 0.9999999999999998, "ap50": 0.9999999999999999, "od_length": 0.9999999999999998, "weighted_sum": 1.0},
        {"ap": 0.0, "ap50": 0.0, "od_length": 0.0, "weighted_sum": 0.0},
    ),
    Departure(
        "huge_coordinate",
        ("1", "2"),
        "raises OverflowError (in pycocotools) on a coordinate such as 10**400",
        "an integer beyond the double range is not finite: the box is invalid, a false positive",
        _NO_CRASH,
        _sample(_boxes('{"bbox_2d": [10, 10, 1' + "0" * 400 + ', 110], "label": "cat"}')),
        f'answer [{{"bbox_2d": [10, 10, 10**400, 110], "label": "cat"}}]; {_CAT_SHOWN}',
        {"ap": "raises OverflowError", "ap50": "raises OverflowError", "od_length": "raises OverflowError"},
        {"ap": 0.0, "ap50": 0.0, "od_length": 0.0},
    ),
    Departure(
        "solution_answer_block",
        ("1", "2"),
        "ap, ap50 and od_length read the FIRST <answer> block of a solution, weighted_sum the last "
        "(its own pipeline strips the solution's tags and wraps it once, so it never has two there)",
        "every reward reads the LAST <answer> block of the solution",
        "one reading of a ground truth: every reward scores against the same boxes",
        _sample(_answer("None"), "<answer>None</answer> <answer>" + _fenced("[" + _CAT_JSON + "]") + "</answer>"),
        "answer None; solution <answer>None</answer> <answer>```json [<the cat>]```</answer>",
        {"ap": 1.0, "ap50": 1.0, "od_length": 1.0},
        {"ap": 0.0, "ap50": 0.0, "od_length": 0.0},
    ),
    Departure(
        "unreadable_solution",
        ("1", "2"),
        "a ground truth it cannot read raises in ap/ap50/od_length (here IndexError) and scores 0 "
        "elsewhere, or is scored as written (NaN, inverted boxes)",
        "the sample is refused: every reward null, with a message naming the problem (and the "
        "trainer refuses such a line when it loads the data)",
        "broken data must be mended, not trained on",
        _sample(
            _boxes(_CAT_JSON), "<answer> " + _fenced('[{"bbox_2d": [10, 10, 110], "label": "cat"}]') + " </answer>"
        ),
        'answer [<the cat>]; solution ```json [{"bbox_2d": [10, 10, 110], "label": "cat"}]```; 512 tokens',
        {
            "format": 1.0,
            "ap": "raises IndexError",
            "ap50": "raises IndexError",
            "od_length": "raises IndexError",
            "weighted_sum": 0.0,
            "repetition": 0.0,
            "cosine": 0.75,
        },
        {
            "format": None,
            "ap": None,
            "ap50": None,
            "od_length": None,
            "weighted_sum": None,
            "repetition": None,
            "cosine": None,
        },
    ),
    Departure(
        "missing_label",
        ("1", "2"),
        "weighted_sum raises UnboundLocalError (or reuses the previous item's label) when a matched "
        "prediction has no label; cosine, which computes it first, too",
        'a missing or non-string label reads as ""',
        _NO_CRASH,
        _sample(_boxes('{"bbox_2d": [10, 10, 110, 110]}')),
        f'answer [{{"bbox_2d": [10, 10, 110, 110]}}]; {_CAT_SHOWN}; 512 tokens',
        {"weighted_sum": "raises UnboundLocalError", "cosine": "raises UnboundLocalError"},
        {"weighted_sum": 0.3, "cosine": -0.25},
    ),
    Departure(
        "non_object_items",
        ("1", "2"),
        "repetition raises TypeError on a list item that is not an object (a number, a list)",
        "such items are skipped",
        _NO_CRASH,
        _sample("```json\n[1, " + _CAT_JSON + ", " + _CAT_JSON + "]\n```"),
        "completion ```json [1, <the cat>, <the cat>]```",
        {"repetition": "raises TypeError"},
        {"repetition": -0.5},
    ),
    Departure(
        "unparsable_numbers",
        ("1", "2"),
        "repetition raises on JSON that Python cannot hold: an integer of more than 4,300 digits "
        "(ValueError), 3,000 nested brackets (RecursionError)",
        "the block is unparsable: the word 6-gram rule applies",
        _NO_CRASH,
        _sample("```json\n[" + "9" * 5000 + "]\n```"),
        "completion ```json [<5,000 nines>]```",
        {"repetition": "raises ValueError"},
        {"repetition": 0.0},
    ),
    Departure(
        "cosine_accuracy",
        ("1", "2"),
        "cosine overwrites the accuracy with 1.0, so every answer is treated as correct",
        "the accuracy is the sample's real weighted_sum (correct when >= 0.7)",
        "the published intent: a wrong answer must not earn a correct one's reward",
        _sample(_answer("None")),
        f"answer None; {_CAT_SHOWN}; 512 tokens",
        {"cosine": 0.75},
        {"cosine": -0.25},
    ),
    Departure(
        "cosine_clamp",
        ("1", "2"),
        "cosine keeps oscillating past max_length (1,024 tokens): at 2,048 it is back at its start",
        "completion_tokens are clamped to max_length",
        "a longer answer must never score higher",
        _sample(_boxes(_CAT_JSON), completion_tokens=2048),
        f"answer [<the cat>]; {_CAT_SHOWN}; 2,048 tokens",
        {"cosine": 1.0},
        {"cosine": 0.5},
    ),
    Departure(
        "repair_beyond_cut_lists",
        ("2",),
        "repetition repairs any malformed JSON with json_repair (quadratic: 100 KB took 106 s)",
        "our linear-time repair reads box lists cut short at any length, equal to json_repair there; "
        "other malformed JSON (single quotes, missing commas, text after the list) is unparsable: "
        "the word 6-gram rule applies",
        "any request's worst case stays linear in its size",
        _sample("```json\n[{'bbox_2d': [1, 2, 3, 4], 'label': 'cat'}, {'bbox_2d': [1, 2, 3, 4], 'label': 'cat'}]\n```"),
        "completion ```json [{'bbox_2d': [1, 2, 3, 4], 'label': 'cat'}, <the same again>]``` (single quotes)",
        {"repetition": -0.5},
        {"repetition": 0.0},
    ),
    # -------------------------------------------- version 1 only: misreadings, mended in version 2
    Departure(
        "v1_cosine_wrong_direction",
        ("1",),
        "for a wrong answer its formula runs from -0.5 at 0 tokens up to 0.0 at max_length (less "
        "penalty the longer it explores)",
        "version 1 ran from 0.0 down to -0.5 (it followed the variable names, not the formula)",
        "a misreading; version 2 follows the formula",
        _sample(_answer("None"), completion_tokens=0),
        f"answer None; {_CAT_SHOWN}; 0 tokens",
        {"cosine": "-0.5 by its formula with the real accuracy (1.0 as it forces the accuracy)"},
        {"cosine": 0.0},
    ),
    Departure(
        "v1_not_a_list",
        ("1",),
        "loops over a fenced JSON answer that is not a list (an object's keys, a string's "
        "characters): a non-empty, unmatched prediction",
        "version 1 read it as no prediction, so against an empty ground truth it scored 1.0",
        "a misreading; version 2 loops over it as the reference does",
        _sample(_answer(_fenced(_CAT_JSON)), "<answer> " + _fenced("[]") + " </answer>"),
        'answer {"bbox_2d": [10, 10, 110, 110], "label": "cat"} (not a list); solution ```json []```',
        {"ap": 0.0, "ap50": 0.0, "od_length": 0.0, "weighted_sum": 0.0},
        {"ap": 1.0, "ap50": 1.0, "od_length": 1.0, "weighted_sum": 1.0},
    ),
    Departure(
        "v1_upper_case_answer",
        ("1",),
        "weighted_sum normalises the texts twice, so on the second, lower-cased pass an upper-case "
        "<ANSWER> block is an answer block",
        "version 1 normalised once and read the first ```json block of the whole completion",
        "a misreading; version 2 normalises twice",
        _sample(
            "<think>maybe "
            + _fenced('[{"bbox_2d": [300, 300, 400, 400], "label": "cat"}]')
            + "</think><ANSWER>"
            + _fenced("[" + _CAT_JSON + "]")
            + "</ANSWER>"
        ),
        f"<think>maybe ```json [a wrong box]```</think><ANSWER>```json [<the cat>]```</ANSWER>; {_CAT_SHOWN}",
        {"weighted_sum": 1.0},
        {"weighted_sum": 0.0},
    ),
    Departure(
        "v1_empty_fence",
        ("1",),
        "repetition goes on to the bare-list pattern when a plain ``` ``` fence is empty",
        "version 1 stopped at the empty fence and counted words",
        "a misreading; version 2 goes on",
        _sample("``` ``` then [" + ", ".join([_CAT_JSON] * 3) + "]"),
        "completion ``` ``` then [<the cat>, <the cat>, <the cat>]",
        {"repetition": -0.6666666666666667},
        {"repetition": -0.368421052631579},
    ),
    Departure(
        "v1_repair_cap",
        ("1",),
        "repetition repairs malformed JSON of any length with json_repair",
        "version 1 repaired only blocks of at most 1,024 characters; a longer one (25 boxes is "
        "longer) was unparsable and the word 6-gram rule applied",
        "json_repair is quadratic on hostile text; version 2 repairs cut-off box lists of any length in linear time",
        _sample("```json\n[" + ", ".join([_CAT_JSON] * 30) + ', {"bbox_2d": [10, 1\n```'),
        'completion ```json [<the cat> x 30, {"bbox_2d": [10, 1``` (1,370 characters, cut off)',
        {"repetition": -0.9666666666666667},
        {"repetition": -0.9476190476190476},
    ),
)


def departures_of(version: str) -> dict[str, tuple[Departure, ...]]:
    """Every reward's departures in ``version``."""
    return {name: tuple(d for d in DEPARTURES if version in d.versions and name in d.rewards) for name in REWARD_NAMES}


def _value(value: float | str | None) -> str:
    if value is None:
        return "null (refused)"
    return value if isinstance(value, str) else repr(value)


def _values(values: Mapping[str, float | str | None]) -> str:
    return "; ".join(f"{name} {_value(value)}" for name, value in values.items())


def markdown_table() -> str:
    """The departures as one Markdown table (README.md and docs/reward-spec.md hold exactly this)."""
    rows = [
        "| id | versions | rewards | the reference | ours | why | example | reference gives | we give |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in DEPARTURES:
        text = [d.id, ", ".join(d.versions), ", ".join(d.rewards), d.reference, d.here, d.why]
        cells = [cell.replace("<", "&lt;") for cell in text]  # <answer> is text, not HTML
        cells.append(f"```` {d.shown} ````")  # a code span that may hold ``` fences
        cells += [_values(d.reference_values), _values(d.our_values)]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"
