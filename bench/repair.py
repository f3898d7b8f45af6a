"""Repetition's reading of malformed box lists: version 2's own linear repair against json-repair
(the reference's, version 1's up to 1,024 characters), side by side in one run.

* realistic: a box list repeated until the completion is cut off, at the longest completion a recipe
  allows (4,096 tokens, about 16 KB), and at 25 boxes (1.3 KB, already past version 1's cap);
* hostile: ``[{"bbox_2d"`` repeated (json-repair is quadratic on it), 10 KB for json-repair, 100 KB
  and 1 MB for ours;
* a request of 16 hostile 1,024-character samples, the worst version 1 allows per sample.

Each timing is the best of ``repeats`` runs of the whole repetition reward on a fresh parse.
"""

from __future__ import annotations

import json
import time

import json_repair

from services.reward_api.engine.parsing import ParsedCompletion
from services.reward_api.engine.rewards.repetition import repetition


def _cut_list(n_boxes: int) -> str:
    boxes = [json.dumps({"bbox_2d": [10 + i, 20 + i, 60 + i, 90 + i], "label": "person"}) for i in range(5)]
    return "```json\n[" + ", ".join(boxes[i % 5] for i in range(n_boxes)) + ', {"bbox_2d": [10, 2\n```'


def _hostile(chars: int) -> str:
    unit = '[{"bbox_2d"'
    return "```json\n" + unit * (chars // len(unit)) + "\n```"


def _best(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def _ours(text: str, repeats: int) -> float:
    return _best(lambda: repetition(ParsedCompletion(text), "2"), repeats)


def _json_repair(text: str, repeats: int) -> float:
    block = text[len("```json\n"):-len("\n```")]
    return _best(lambda: json_repair.loads(block), repeats)


def run(repeats: int = 5) -> dict:
    long_list, short_list = _cut_list(340), _cut_list(25)
    hostile_1k = _hostile(1024)
    out = {
        "cut_list_16kb": {"chars": len(long_list), "ours_ms": 1000 * _ours(long_list, repeats),
                          "json_repair_ms": 1000 * _json_repair(long_list, repeats)},
        "cut_list_25_boxes": {"chars": len(short_list), "ours_ms": 1000 * _ours(short_list, repeats),
                              "json_repair_ms": 1000 * _json_repair(short_list, repeats)},
        "hostile_10kb": {"ours_ms": 1000 * _ours(_hostile(10_000), repeats),
                         "json_repair_ms": 1000 * _json_repair(_hostile(10_000), 1)},
        "hostile_100kb_ours_ms": 1000 * _ours(_hostile(100_000), repeats),
        "hostile_1mb_ours_ms": 1000 * _ours(_hostile(1_000_000), 1),
        "request_16_hostile_1kb": {
            "version_1_ms": 1000 * _best(lambda: [repetition(ParsedCompletion(hostile_1k), "1") for _ in range(16)], 1),
            "version_2_ms": 1000 * _best(lambda: [repetition(ParsedCompletion(hostile_1k), "2") for _ in range(16)],
                                         repeats),
        },
    }
    # the two readings agree on the realistic lists (the point of the repair)
    for text in (long_list, short_list):
        block = text[len("```json\n"):-len("\n```")]
        assert repetition(ParsedCompletion(text), "2").total == sum(
            1 for item in json_repair.loads(block) if isinstance(item, dict) and {"bbox_2d", "label"} <= set(item))
    return out


def rows(r: dict) -> list[tuple[str, str, str]]:
    return [
        ("repetition, cut-off list 16 KB: ours / json-repair (ms)",
         f"{r['cut_list_16kb']['ours_ms']:.1f}", f"json-repair {r['cut_list_16kb']['json_repair_ms']:.1f} ms"),
        ("repetition, hostile 10 KB: ours / json-repair (ms)",
         f"{r['hostile_10kb']['ours_ms']:.2f}", f"json-repair {r['hostile_10kb']['json_repair_ms']:.0f} ms"),
        ("repetition, hostile 100 KB / 1 MB, ours (ms)",
         f"{r['hostile_100kb_ours_ms']:.2f}", f"1 MB: {r['hostile_1mb_ours_ms']:.1f} ms"),
        ("repetition, 16 hostile 1 KB samples: v1 / v2 (ms)",
         f"{r['request_16_hostile_1kb']['version_1_ms']:.0f}", f"v2 {r['request_16_hostile_1kb']['version_2_ms']:.2f} ms"),
    ]


if __name__ == "__main__":
    results = run()
    print(json.dumps(results, indent=2))
