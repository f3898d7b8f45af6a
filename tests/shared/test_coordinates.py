"""shared.adapters.coordinates: the one place adapters put ground truth in the model's pixels."""

from __future__ import annotations

import doctest
import random
import warnings

import pytest

from shared.adapters import coordinates
from shared.adapters.coordinates import CoordinateWarning, for_model, qwen_input_size, to_model_pixels, warn_outside

TEXT = '<answer>```json\n[{"bbox_2d": [100, 50, 300, 150], "label": "cat"}]\n```</answer>'


def test_doctests():
    assert doctest.testmod(coordinates).failed == 0


def test_input_size_agrees_with_the_qwen_processor():
    smart_resize = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl").smart_resize
    rng = random.Random(0)
    for _ in range(3000):
        w, h = rng.randint(1, 5000), rng.randint(1, 5000)
        if max(w, h) / min(w, h) > 200:
            continue
        low, high = rng.choice([(3136, 12845056), (3136, 1003520), (28 * 28 * 4, 28 * 28 * 16)])
        new_h, new_w = smart_resize(h, w, factor=28, min_pixels=low, max_pixels=high)
        assert qwen_input_size(w, h, min_pixels=low, max_pixels=high) == (new_w, new_h), (w, h, low, high)


def test_text_and_structured_ground_truth_rescale_alike():
    structured = [{"bbox_2d": [100, 50, 300, 150], "label": "cat"}]
    assert to_model_pixels(TEXT, (1000, 500), (500, 1000)) == to_model_pixels(structured, (1000, 500), (500, 1000))
    assert to_model_pixels(TEXT, (1000, 500), (500, 1000))[0]["bbox_2d"] == [50.0, 100.0, 150.0, 300.0]
    assert to_model_pixels("<answer>None</answer>", (10, 10), (20, 20)) == []


def test_a_box_outside_the_input_image_is_warned_about():
    with pytest.warns(CoordinateWarning, match=r"outside the 200x100 image the model saw.*original_size"):
        assert warn_outside(TEXT, (200, 100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_outside(TEXT, (300, 150))
        assert for_model(TEXT, None) == TEXT  # nothing given: sent as is


@pytest.mark.parametrize("size", [(0, 10), (10,), "wide", (float("nan"), 3)])
def test_bad_sizes_are_named(size):
    with pytest.raises(ValueError, match="input_size"):
        to_model_pixels(TEXT, (10, 10), size)


def test_unreadable_box_list_is_refused_with_its_text():
    with pytest.raises(ValueError, match="not valid JSON"):
        to_model_pixels('<answer>[{"bbox_2d": [1, 2,</answer>]', (10, 10), (20, 20))
