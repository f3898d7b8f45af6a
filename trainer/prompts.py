"""The research's prompts, in one place: detection questions, question templates, answer format.

Shared by the trainer, the synthetic data generator and the evaluation (``trainer.coco_datasets``).
The wording is the research's, with the one fix its findings call for (a space after the object
list: "Even small grammatical issues (like a missing space) significantly affected training
convergence", od-rl-findings section 5.1).

* `detection_question(labels)`: the D³/OVDEval question of the blog ("Please carefully check the
  image and detect the following objects: [...]").
* `ovd_question(labels)`: the OVDEval training phrasing of the findings ("Please carefully observe
  the image and detect the following targets: a; b. Output each ...").
* `QUESTION_TEMPLATES`: what is appended to every question: ``standard`` ("Output the thinking
  process in <think> </think> and final answer in <answer> </answer> tags."), ``enhanced`` (the
  prompt of findings 5.2, which made the 3B model's accuracy reward rise right after its format
  reward) and ``none``. The template goes into the user turn, not the system prompt (findings 5.3:
  for instruct models a system-prompt template barely moved the format reward).
* `answer_text(items)`: the ground truth in the research's answer format, a fenced JSON list or the
  literal ``None`` when none of the asked objects is in the image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

IMAGE_PLACEHOLDER = "<image>"  # VLM-R1 JSONL marks each image's place in the question with it

QUESTION_TEMPLATES: dict[str, str] = {
    "standard": "{Question} Output the thinking process in <think> </think> and final answer in "
    "<answer> </answer> tags.",
    "enhanced": "{Question} First thinks about the reasoning process in the mind and then provides the user "
    "with the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think>"
    "<answer> answer here </answer>",
    "none": "{Question}",
}

_BOX_FORMAT_OBJECTS = '[{"bbox_2d": [x1, y1, x2, y2], "label": "object name"}]'
_BOX_FORMAT_TARGETS = (
    '[{"bbox_2d": [x1, y1, x2, y2], "label": "target name"}, {"bbox_2d": [x1, y1, x2, y2], "label": "target name"}]'
)
ONE_BOX_PER_CATEGORY = " Output only one bbox for each object."


def detection_question(labels: Sequence[str], one_box_per_category: bool = False) -> str:
    """The blog's detection question for ``labels`` (listed as the research lists them: a Python list)."""
    one_box = ONE_BOX_PER_CATEGORY if one_box_per_category else ""
    return (
        f"Please carefully check the image and detect the following objects: {list(labels)}.{one_box} "
        "Output the bbox coordinates of detected objects in <answer></answer>. "
        f"The bbox coordinates in Markdown format should be:\n```json\n{_BOX_FORMAT_OBJECTS}\n```\n"
        'If no targets are detected in the image, simply respond with "None".'
    )


def ovd_question(labels: Sequence[str]) -> str:
    """The findings' OVDEval question for ``labels`` (joined with "; "), missing space fixed."""
    return (
        f"Please carefully observe the image and detect the following targets: {'; '.join(labels)}. "
        "Output each detected targets' bbox coordinates in JSON format. The format of the bbox coordinates is: "
        f"```json\n{_BOX_FORMAT_TARGETS}\n```. If there are no such targets in the image, simply respond with None."
    )


def apply_template(question: str, template: str = "standard") -> str:
    """``question`` with the named question template applied (``standard``, ``enhanced``, ``none``)."""
    try:
        return QUESTION_TEMPLATES[template].format(Question=question)
    except KeyError:
        raise ValueError(
            f"unknown question template {template!r}; choose one of {', '.join(QUESTION_TEMPLATES)}"
        ) from None


def strip_image_placeholders(text: str) -> str:
    """The question of a VLM-R1 line without its ``<image>`` markers (the images go in as content parts)."""
    return text.replace(IMAGE_PLACEHOLDER, "").strip()


def answer_text(items: Sequence[Mapping[str, Any]]) -> str:
    """The research's answer format: a fenced JSON list, one object per line; ``None`` for no objects."""
    if not items:
        return "None"
    lines = ",\n".join(json.dumps({"bbox_2d": list(item["bbox_2d"]), "label": item["label"]}) for item in items)
    return f"```json\n[\n{lines}\n]\n```"


SFT_THINKING = "I look for each object the question names."


def sft_completion(items: Sequence[Mapping[str, Any]], thinking: str = SFT_THINKING) -> str:
    """The answer a supervised warm start teaches: a short ``<think>`` and the ground truth in the
    answer format, coordinates rounded to whole pixels (the model answers in whole pixels).

    >>> sft_completion([{"bbox_2d": [10.4, 20.6, 30, 40], "label": "red square"}], thinking="ok")
    '<think>ok</think><answer>```json\n[\n{"bbox_2d": [10, 21, 30, 40], "label": "red square"}\n]\n```</answer>'
    >>> sft_completion([], thinking="ok")
    '<think>ok</think><answer>None</answer>'
    """
    rounded = [{"bbox_2d": [round(float(v)) for v in item["bbox_2d"]], "label": item["label"]} for item in items]
    return f"<think>{thinking}</think><answer>{answer_text(rounded)}</answer>"


def vlm_r1_record(
    image: str | Sequence[str],
    question: str,
    solution: Sequence[Mapping[str, Any]],
    record_id: int | str | None = None,
    accu_reward_method: str | None = None,
) -> dict:
    """One line of VLM-R1 JSONL: ``{"id", "image", "conversations": [human, gpt], "accu_reward_method"?}``.

    ``question`` is the bare question: the ``<image>`` markers are added here (one per image) and the
    question template is applied at training time, so one data file serves every template.
    """
    images = [image] if isinstance(image, str) else list(image)
    record: dict[str, Any] = {}
    if record_id is not None:
        record["id"] = record_id
    record["image"] = images[0] if isinstance(image, str) else images
    record["conversations"] = [
        {"from": "human", "value": IMAGE_PLACEHOLDER * len(images) + question},
        {"from": "gpt", "value": answer_text(solution)},
    ]
    if accu_reward_method is not None:
        record["accu_reward_method"] = accu_reward_method
    return record
