"""trainer.coco_datasets: each subset rule and each prompt mode, on COCO-format files made here."""

from __future__ import annotations

import json

import pytest

from trainer import coco_datasets, prompts
from trainer.data import read_solution

CATEGORIES = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]


class CocoFile:
    """A small COCO annotation dict built image by image."""

    def __init__(self) -> None:
        self.data = {"images": [], "annotations": [], "categories": CATEGORIES}

    def image(self, image_id: int, *boxes: tuple[int, list[float]], crowd: tuple[int, ...] = ()) -> CocoFile:
        self.data["images"].append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": 640, "height": 480})
        for category_id, bbox in boxes:
            self._annotation(image_id, category_id, bbox, 0)
        for category_id in crowd:
            self._annotation(image_id, category_id, [0, 0, 50, 50], 1)
        return self

    def _annotation(self, image_id: int, category_id: int, bbox: list[float], iscrowd: int) -> None:
        ann_id = len(self.data["annotations"]) + 1
        self.data["annotations"].append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": bbox,
                "iscrowd": iscrowd,
                "area": bbox[2] * bbox[3],
            }
        )


def boxes(category_id: int, n: int, size: float = 10.0) -> list[tuple[int, list[float]]]:
    return [(category_id, [20.0 * i, 5.0, size, size]) for i in range(n)]


def build(coco: CocoFile, subset: str, mode: str = "positive", images_dir: str = "") -> dict[int, dict]:
    return {r["id"]: r for r in coco_datasets.build_records(coco.data, subset, mode, images_dir)}


def ground_truth(record: dict) -> list[dict]:
    return read_solution(record["conversations"][1]["value"])


def labels_of(record: dict) -> list[str]:
    return sorted(item["label"] for item in ground_truth(record))


# ---------------------------------------------------------------- subset rules


def test_pos_1_leaves_out_a_category_with_more_than_10_boxes_in_that_image_only():
    coco = CocoFile().image(1, *boxes(1, 11), *boxes(3, 2)).image(2, *boxes(1, 10))
    records = build(coco, "pos_1", "all")
    assert labels_of(records[1]) == ["car", "car"]
    assert records[1]["categories"] == ["car", "dog"]  # person is never asked for in image 1
    assert labels_of(records[2]) == ["person"] * 10  # 10 boxes is not "more than 10"
    assert records[2]["categories"] == ["person", "car", "dog"]  # category-id order


def test_pos_1_skips_an_image_left_with_no_box():
    coco = CocoFile().image(1, *boxes(1, 12)).image(2)
    assert build(coco, "pos_1") == {}


def test_crowd_annotation_makes_its_category_unaskable_in_pos_1():
    coco = CocoFile().image(1, *boxes(1, 2), *boxes(18, 1), crowd=(1,))
    record = build(coco, "pos_1", "all")[1]
    assert labels_of(record) == ["dog"]
    assert record["categories"] == ["car", "dog"]


def test_pos_2_keeps_only_images_with_one_box_per_category():
    coco = (
        CocoFile()
        .image(1, *boxes(1, 1), *boxes(3, 1))  # one each: kept
        .image(2, *boxes(1, 2))  # two persons: dropped
        .image(3)  # no box: dropped
        .image(4, *boxes(18, 1), crowd=(1,))  # a crowd of persons: dropped
    )
    records = build(coco, "pos_2")
    assert list(records) == [1]
    assert labels_of(records[1]) == ["car", "person"]


def test_pos_3_keeps_images_with_1_to_10_boxes_in_all():
    coco = (
        CocoFile()
        .image(1, *boxes(1, 6), *boxes(3, 4))  # 10 in all: kept
        .image(2, *boxes(1, 6), *boxes(3, 5))  # 11: dropped
        .image(3)  # 0: dropped
        .image(4, *boxes(1, 1), crowd=(3,))  # crowd: dropped
    )
    records = build(coco, "pos_3")
    assert list(records) == [1]
    assert len(ground_truth(records[1])) == 10


def test_boxes_are_converted_to_corners_and_degenerate_boxes_dropped():
    coco = CocoFile().image(1, (1, [10.5, 20.25, 30.1, 40.2]), (3, [0, 0, 0, 15]))
    [item] = ground_truth(build(coco, "pos_3")[1])
    assert item == {"bbox_2d": [10.5, 20.25, 40.6, 60.45], "label": "person"}


def test_annotations_of_unknown_images_are_ignored_and_order_follows_the_file():
    coco = CocoFile().image(7, *boxes(3, 1)).image(2, *boxes(1, 1))
    coco.data["annotations"].append({"id": 99, "image_id": 555, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 0})
    assert list(build(coco, "pos_2")) == [7, 2]


# ---------------------------------------------------------------- prompt modes


def test_all_mode_asks_every_category_in_category_id_order():
    record = build(CocoFile().image(1, *boxes(18, 1)), "pos_3", "all")[1]
    question = record["conversations"][0]["value"]
    assert question == prompts.IMAGE_PLACEHOLDER + prompts.detection_question(["person", "car", "dog"])
    assert record["categories"] == ["person", "car", "dog"]
    assert labels_of(record) == ["dog"]


def test_positive_mode_asks_only_present_categories():
    record = build(CocoFile().image(1, *boxes(18, 1), *boxes(3, 2)), "pos_3", "positive")[1]
    assert record["conversations"][0]["value"] == prompts.IMAGE_PLACEHOLDER + prompts.detection_question(["car", "dog"])
    assert record["categories"] == ["car", "dog"]
    assert labels_of(record) == ["car", "car", "dog"]


def test_one_box_mode_keeps_the_largest_box_of_each_category_and_says_so():
    coco = CocoFile().image(1, (3, [0, 0, 10, 10]), (3, [50, 50, 30, 20]), (3, [100, 0, 20, 30]), (1, [5, 5, 4, 4]))
    record = build(coco, "pos_3", "one_box")[1]
    question = record["conversations"][0]["value"]
    assert question == prompts.IMAGE_PLACEHOLDER + prompts.detection_question(
        ["person", "car"], one_box_per_category=True
    )
    assert prompts.ONE_BOX_PER_CATEGORY.strip() in question
    # Areas 100, 600 and 600: the first of the two largest wins; order stays the file's.
    assert ground_truth(record) == [
        {"bbox_2d": [50.0, 50.0, 80.0, 70.0], "label": "car"},
        {"bbox_2d": [5.0, 5.0, 9.0, 9.0], "label": "person"},
    ]


def test_unknown_subset_or_mode_is_refused():
    with pytest.raises(ValueError, match="subset"):
        list(coco_datasets.build_records(CocoFile().data, "pos_9", "all"))
    with pytest.raises(ValueError, match="mode"):
        list(coco_datasets.build_records(CocoFile().data, "pos_1", "some"))


# ---------------------------------------------------------------- command line


def test_command_line_writes_trainer_jsonl_with_image_paths(tmp_path):
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps(CocoFile().image(1, *boxes(1, 2)).image(2, *boxes(1, 11)).data))
    out = tmp_path / "pos_3.jsonl"
    assert (
        coco_datasets.main(
            [str(annotations), "--subset", "pos_3", "--mode", "all", "--images", "val2017", "--out", str(out)]
        )
        == 0
    )
    [line] = out.read_text().splitlines()
    record = json.loads(line)
    assert record["image"] == "val2017/000000000001.jpg"
    assert record["conversations"][0]["from"] == "human" and record["conversations"][1]["from"] == "gpt"
    assert labels_of(record) == ["person", "person"]
