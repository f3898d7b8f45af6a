"""repetition version 2's own repair of box lists: wherever it answers, json_repair (what the
reference uses) gives the same value; it answers on every cut of a realistic box list; it declines
the rest."""

from __future__ import annotations

import json
import random

import json_repair
import pytest

from services.reward_api.engine.repair import repair_box_list

LABELS = ("cat", "traffic light", "person 2", "café", 'say "hi"', "back\\slash")


def realistic_lists(seed: int = 1):
    """Box lists the way models write them: compact, pretty-printed, without spaces, keys in
    either order, float coordinates, extra keys, trailing commas, non-ASCII labels."""
    rng = random.Random(seed)
    for n in (1, 2, 3):
        items = [{"bbox_2d": [rng.randint(0, 600), rng.randint(0, 400), rng.randint(0, 600) + 0.5, rng.randint(0, 400)],
                  "label": rng.choice(LABELS)} for _ in range(n)]
        yield json.dumps(items)
        yield json.dumps(items, indent=2)
        yield json.dumps(items, separators=(",", ":"))
        yield json.dumps(items, ensure_ascii=False, indent=4)
        yield json.dumps([{"label": i["label"], "bbox_2d": i["bbox_2d"]} for i in items])
        yield json.dumps(items)[:-1] + ",]"
        yield json.dumps(items)[:-1] + ", ]\n  "
        yield json.dumps([dict(i, score=0.95) for i in items])
        yield json.dumps([dict(i, bbox_2d=[-1, -2, 3, 4]) for i in items])


def cut_points():
    for text in realistic_lists():
        for end in range(1, len(text) + 1):
            prefix = text[:end]
            try:
                json.loads(prefix)
            except ValueError:
                yield prefix


def test_every_cut_of_a_realistic_box_list_is_repaired_as_json_repair_does():
    checked = 0
    for prefix in cut_points():
        mine = repair_box_list(prefix)
        assert mine is not None, f"declined a realistic cut: {prefix[-40:]!r}"
        expected = json_repair.loads(prefix)
        assert repr(mine) == repr(expected), prefix[-60:]
        checked += 1
    assert checked > 3000


@pytest.mark.parametrize(
    "text",
    [
        "[{'bbox_2d': [1, 2, 3, 4], 'label': 'cat'}]",  # single quotes
        '[{"bbox_2d": [1, 2, 3, 4], "label": "cat"} {"bbox_2d": [1, 2, 3, 4], "label": "cat"}]',  # no comma
        '[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}] and that is all',  # text after the list
        '[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}], [{"bbox_2d": [1, 2, 3, 4], "label": "cat"}]',
        '{"bbox_2d": [1, 2, 3, 4], "label": "cat"}, {"bbox_2d": [1, 2, 3, 4], "label": "cat"}',  # no brackets
        '[{"bbox_2d": [1, 2, 3e',  # a cut exponent
        '[{"bbox_2d": [1, 2, 3, 4], "label": tr',  # a cut literal
        '[{"bbox_2d": [1, 2, 3, 4], "label": "cat",}]',  # a trailing comma inside an object
        "[" * 5000,
        '[{"bbox_2d"' * 2000,
        "",
        "cat",
    ],
)
def test_other_malformed_text_is_declined(text):
    assert repair_box_list(text) is None


def test_what_it_repairs_beyond_cuts():
    a = {"bbox_2d": [1, 2, 3, 4], "label": "a"}
    assert repair_box_list(f"[{json.dumps(a)},, ]") is None  # two commas: declined
    assert repair_box_list(f"[{json.dumps(a)}, ]") == [a]
    assert repair_box_list(f"[{json.dumps(a)},\n") == [a]
    assert repair_box_list("[{") == [] == json_repair.loads("[{")
    assert repair_box_list('[{"bb') == [["bb"]] == json_repair.loads('[{"bb')
    assert repair_box_list("[1, 2, [3") is None  # a cut item that is not an object
