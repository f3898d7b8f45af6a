"""A corpus of samples of our own for pinning reward versions (issue 10).

``named_cases()`` are hand-written, one or more per fact the comparison with the published
reference found (B1-B5, the solution-block rule, the raise cases, the repair cap) plus ordinary
answers; ``random_cases()`` are realistic completions drawn from a fixed seed (correct, shifted,
mislabelled, extra, missing, repeated, truncated and malformed box lists, None answers, long
thinking). ``v1_values.json`` holds what version 1 gave on every case on the day version 2 was
added; tests/engine/test_versions.py checks pinned version 1 still gives exactly that.

Nothing here is copied from anywhere: the cases are written from the facts listed in issue 10.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

V1_VALUES = Path(__file__).with_name("v1_values.json")
REWARD_NAMES = ("format", "ap", "ap50", "od_length", "weighted_sum", "repetition", "cosine")

CAT = {"bbox_2d": [10, 10, 110, 110], "label": "cat"}
DOG = {"bbox_2d": [200, 50, 300, 180], "label": "dog"}


def fenced(items) -> str:
    return "```json\n" + (items if isinstance(items, str) else json.dumps(items)) + "\n```"


def answer(body: str, think: str = "ok") -> str:
    return f"<think>{think}</think><answer>{body}</answer>"


def gt_text(items) -> str:
    """A solution the way the reference's pipeline wraps it: ``<answer> ... </answer>``."""
    return "<answer> None </answer>" if not items else f"<answer> {fenced(items)} </answer>"


def _box_list(n: int, start: int = 0) -> list[dict]:
    return [{"bbox_2d": [10 + 7 * i, 20 + 3 * i, 60 + 7 * i, 90 + 3 * i], "label": "person"} for i in
            range(start, start + n)]


def _repeated_unclosed(n_boxes: int, distinct: int, close_fence: bool = True) -> str:
    """A box list that repeats ``distinct`` boxes and breaks off mid-item, its fence closed (the
    model gave up on the list) or not (the completion was cut off)."""
    items = [json.dumps(_box_list(distinct)[i % distinct]) for i in range(n_boxes)]
    text = "<think>many people</think><answer>```json\n[" + ", ".join(items) + ', {"bbox_2d": [10, 2'
    return text + "\n```</answer>" if close_fence else text


def named_cases() -> list[dict]:
    """(id, completion, solution, completion_tokens), hand-written."""
    cats = [CAT]
    cases = [
        # ordinary answers
        ("correct_one_box", answer(fenced(cats)), gt_text(cats), 40),
        ("correct_two_boxes_structured", answer(fenced([CAT, DOG])), [CAT, DOG], 80),
        ("shifted_box", answer(fenced([{"bbox_2d": [20, 20, 120, 120], "label": "cat"}])), gt_text(cats), 60),
        ("wrong_label", answer(fenced([{"bbox_2d": [10, 10, 110, 110], "label": "dog"}])), gt_text(cats), 60),
        ("extra_box", answer(fenced([CAT, DOG])), gt_text(cats), 90),
        ("none_none", answer("None"), gt_text([]), 12),
        ("none_vs_cat", answer("None"), gt_text(cats), 12),
        ("no_answer_block", "<think>I am not sure</think>", gt_text(cats), 300),
        ("answer_without_think", "<answer>" + fenced(cats) + "</answer>", gt_text(cats), 30),
        # B4: cosine for wrong answers, the example
        ("b4_wrong_0", "<think>ok</think><answer>None</answer>", gt_text(cats), 0),
        ("b4_wrong_256", "<think>ok</think><answer>None</answer>", gt_text(cats), 256),
        ("b4_wrong_1024", "<think>ok</think><answer>None</answer>", gt_text(cats), 1024),
        ("b4_wrong_past_max", "<think>ok</think><answer>None</answer>", gt_text(cats), 3000),
        ("b4_correct_512", answer(fenced(cats)), gt_text(cats), 512),
        # B2: a fenced JSON answer that is not a list
        ("b2_object_vs_none", answer(fenced(CAT)), gt_text([]), 40),
        ("b2_string_vs_none", answer(fenced('"cat"')), gt_text([]), 20),
        ("b2_object_vs_cat", answer(fenced(CAT)), gt_text(cats), 40),
        ("b2_object_vs_empty_fence", answer(fenced(CAT)), "<answer> ```json\n[]\n``` </answer>", 40),
        ("b2_empty_object_vs_none", answer(fenced("{}")), gt_text([]), 20),
        ("b2_number_vs_none", answer(fenced("7")), gt_text([]), 20),
        ("b2_null_vs_none", answer(fenced("null")), gt_text([]), 20),
        ("b2_empty_string_vs_none", answer(fenced('""')), gt_text([]), 20),
        ("invalid_json_vs_none", answer(fenced('[{"bbox_2d": [1, 2')), gt_text([]), 20),
        # B1: malformed boxes next to a correct one
        ("b1_three_numbers", answer(fenced([{"bbox_2d": [10, 10, 110], "label": "cat"}, CAT])), gt_text(cats), 50),
        ("b1_missing_bbox", answer(fenced([{"label": "cat"}, CAT])), gt_text(cats), 50),
        ("b1_string_coords", answer(fenced([{"bbox_2d": ["10", "10", "110", "110"], "label": "cat"}, CAT])),
         gt_text(cats), 50),
        ("b1_null_box", answer(fenced([{"bbox_2d": None, "label": "cat"}, CAT])), gt_text(cats), 50),
        ("b1_five_numbers", answer(fenced([{"bbox_2d": [10, 10, 110, 110, 5], "label": "cat"}])), gt_text(cats), 50),
        ("b1_booleans", answer(fenced([{"bbox_2d": [False, False, 110, 110], "label": "cat"}])), gt_text(cats), 50),
        ("b1_nan_box", answer(fenced('[{"bbox_2d": [NaN, NaN, NaN, NaN], "label": "cat"}]')), gt_text(cats), 50),
        ("b1_inverted_box", answer(fenced([CAT, {"bbox_2d": [110, 110, 10, 10], "label": "cat"}])), gt_text(cats), 50),
        # B3: weighted_sum with 5-number boxes, booleans, upper-case answer tags
        ("b3_five_numbers_ws", answer(fenced([{"bbox_2d": [10, 10, 110, 110, 1], "label": "cat"}])), gt_text(cats),
         50),
        ("b3_true_coords_ws", answer(fenced([{"bbox_2d": [True, True, 110, 110], "label": "cat"}])), gt_text(cats), 50),
        ("b3_upper_case_tags", "<think>ok</think><ANSWER>" + fenced(cats) + "</ANSWER>", gt_text(cats), 50),
        ("b3_missing_label", answer(fenced([{"bbox_2d": [10, 10, 110, 110]}])), gt_text(cats), 50),
        # B5: repetition after an empty fence
        ("b5_empty_fence_then_list", "``` ``` then [" + ", ".join([json.dumps(CAT)] * 3) + "]", gt_text(cats), 60),
        ("b5_empty_json_fence", "```json ``` then [" + ", ".join([json.dumps(CAT)] * 3) + "]", gt_text(cats), 60),
        # the solution-block rule: two answer blocks in the solution
        ("solution_two_answer_blocks", answer("None"), "<answer>None</answer> <answer>" + fenced(cats) + "</answer>",
         20),
        # the raise cases
        ("huge_coordinate", answer(fenced('[{"bbox_2d": [10, 10, 1' + "0" * 400 + ', 110], "label": "cat"}]')),
         gt_text(cats), 50),
        ("repetition_5000_digits", "```json\n[" + "9" * 5000 + "]\n```", gt_text(cats), 50),
        ("repetition_deep_nesting", "```json\n" + "[" * 3000 + "]" * 3000 + "\n```", gt_text(cats), 50),
        # the repair cap: realistic malformed, repeated, unclosed box lists
        ("repeat_unclosed_25", _repeated_unclosed(25, 3), gt_text(cats), 1500),
        ("repeat_unclosed_80", _repeated_unclosed(80, 4), gt_text(cats), 4096),
        ("repeat_unclosed_10", _repeated_unclosed(10, 2), gt_text(cats), 600),
        ("repeat_cut_off_25", _repeated_unclosed(25, 3, close_fence=False), gt_text(cats), 1500),
        ("repeat_unclosed_4096_tokens", _repeated_unclosed(330, 5), gt_text(cats), 4096),
        ("trailing_comma_list", "```json\n[" + json.dumps(CAT) + ", " + json.dumps(CAT) + ",]\n```", gt_text(cats), 40),
        ("unclosed_list_no_fence_end", "```json\n[" + json.dumps(CAT) + ", " + json.dumps(CAT), gt_text(cats), 40),
        ("empty_completion", "", gt_text(cats), 0),
    ]
    return [{"id": c[0], "completion": c[1], "solution": c[2], "completion_tokens": c[3]} for c in cases]


# ---------------------------------------------------------------- realistic random cases

_LABELS = ("person", "car", "dog", "cat", "traffic light", "bicycle")


def _random_box(rng: random.Random, width: int = 640, height: int = 480) -> list:
    x1, y1 = rng.randint(0, width - 20), rng.randint(0, height - 20)
    return [x1, y1, rng.randint(x1 + 5, width), rng.randint(y1 + 5, height)]


def _jitter(rng: random.Random, box: list, amount: int) -> list:
    moved = [v + rng.randint(-amount, amount) for v in box]
    return [min(moved[0], moved[2]), min(moved[1], moved[3]), max(moved[0], moved[2]), max(moved[1], moved[3])]


def _prediction(rng: random.Random, truth: list[dict]) -> str:
    kind = rng.choice(("exact", "jitter", "jitter", "mislabel", "extra", "missing", "repeat", "none", "truncate",
                       "floats", "prose"))
    items = [dict(item) for item in truth]
    if kind == "jitter":
        items = [{"bbox_2d": _jitter(rng, i["bbox_2d"], rng.choice((3, 15, 40))), "label": i["label"]} for i in items]
    elif kind == "mislabel" and items:
        items[0]["label"] = rng.choice(_LABELS)
    elif kind == "extra":
        items += [{"bbox_2d": _random_box(rng), "label": rng.choice(_LABELS)} for _ in range(rng.randint(1, 3))]
    elif kind == "missing" and items:
        items = items[1:]
    elif kind == "repeat" and items:
        items = items + [items[0]] * rng.randint(2, 12)
    elif kind == "floats":
        items = [{"bbox_2d": [v + 0.5 for v in i["bbox_2d"]], "label": i["label"]} for i in items]
    if kind == "none":
        body = "None"
    elif kind == "prose":
        body = "I think there is " + " and ".join(i["label"] for i in items) if items else "nothing here"
    else:
        body = fenced(items)
    if kind == "truncate":
        text = "<think>looking</think><answer>" + body
        return text[: rng.randint(len(text) // 2, len(text))]
    think = " ".join(rng.choice(("the", "image", "shows", "a", "small", "object", "near", "left")) for _ in
                     range(rng.randint(3, 60)))
    return answer(body, think)


def random_cases(n: int = 240, seed: int = 10) -> list[dict]:
    rng = random.Random(seed)
    cases = []
    for index in range(n):
        truth = [{"bbox_2d": _random_box(rng), "label": rng.choice(_LABELS)} for _ in range(rng.choice((0, 1, 1, 2, 3, 5)))]
        solution = truth if rng.random() < 0.3 else gt_text(truth)
        cases.append({"id": f"random_{index}", "completion": _prediction(rng, truth), "solution": solution,
                      "completion_tokens": rng.choice((0, 17, 100, 333, 512, 1023, 1024, 2048, 4096))})
    return cases


def all_cases() -> list[dict]:
    return named_cases() + random_cases()


def score_all(version: str) -> dict[str, dict]:
    """Every reward of every case at ``version``: ``{id: {reward: value or None, "error": ...}}``."""
    from services.reward_api.engine.scoring import score_batch

    out = {}
    for case in all_cases():
        sample = {k: case[k] for k in ("completion", "solution", "completion_tokens")}
        scores = score_batch([sample], [{"name": name, "version": version} for name in REWARD_NAMES])
        out[case["id"]] = {name: scores.values[name][0] for name in REWARD_NAMES}
        out[case["id"]]["error"] = scores.errors[0]
    return out


if __name__ == "__main__":  # python -m tests.engine.corpus: (re)write v1_values.json, only ever from version 1
    V1_VALUES.write_text(json.dumps(score_all("1"), indent=1, sort_keys=True) + "\n")
    print(f"wrote {V1_VALUES}")
