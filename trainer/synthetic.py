"""Synthetic detection data: ``python -m trainer.synthetic OUT_DIR --n N [--seed S] [--preset P]``.

Draws images of coloured shapes on a plain background and writes ``OUT_DIR/train.jsonl`` in the
VLM-R1 format with the research's questions (`trainer.prompts`), the ground truth in its answer
format (a fenced JSON list of ``bbox_2d``/``label`` in the image's own pixels), and images in
``OUT_DIR/images/``. Some questions name objects that are not in the image (the hard negatives of
the research); a question that names only absent objects is answered ``None``. Image sizes are
deliberately not multiples of 28, so the processor's resize changes them and the coordinate
conversion is exercised. ``--preset tiny`` (default) draws 70-130 pixel images for the tiny
model; ``--preset small`` draws 120-165 pixel images for the small model (``trainer.tiny_model
--preset small``); ``--preset large`` draws images of COCO's usual sizes (480-640 pixels a side, as
the research's), for the full-size models (``bench/fullsize.sh``). Different seeds give disjoint
draws: train and held-out sets come from two seeds.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path

from trainer import prompts

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40)}
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (245, 245, 240)


def draw_shape(draw, shape: str, box: Sequence[int], colour: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = box
    if shape == "circle":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=colour)
    elif shape == "square":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=colour)
    else:
        draw.polygon([((x1 + x2) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=colour)


def random_scene(rng: random.Random, width: int, height: int, max_objects: int = 3) -> list[dict]:
    """Non-overlapping shapes with distinct labels: ``[{"bbox_2d": [x1, y1, x2, y2], "label", "shape", "colour"}]``."""
    objects: list[dict] = []
    labels = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    rng.shuffle(labels)
    for colour, shape in labels[: rng.randint(1, max_objects)]:
        for _ in range(20):  # a few tries to find a free spot
            side = rng.randint(max(8, min(width, height) // 6), max(10, min(width, height) // 3))
            x1, y1 = rng.randint(0, width - side), rng.randint(0, height - side)
            box = [x1, y1, x1 + side, y1 + side]
            if all(_apart(box, other["bbox_2d"]) for other in objects):
                objects.append({"bbox_2d": box, "label": f"{colour} {shape}", "shape": shape, "colour": colour})
                break
    return objects


def _apart(a: Sequence[int], b: Sequence[int]) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def make_sample(rng: random.Random, image_dir: Path, index: int, sizes: Sequence[tuple[int, int]]) -> dict:
    from PIL import Image, ImageDraw

    width, height = rng.choice(list(sizes))
    scene = random_scene(rng, width, height)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene:
        draw_shape(draw, obj["shape"], obj["bbox_2d"], COLOURS[obj["colour"]])
    name = f"{index:06d}.png"
    image.save(image_dir / name)

    present = [obj["label"] for obj in scene]
    absent = [f"{c} {s}" for c in COLOURS for s in SHAPES if f"{c} {s}" not in present]
    roll = rng.random()
    if roll < 0.2:  # only absent objects: the answer is None
        asked = rng.sample(absent, rng.randint(1, 2))
    elif roll < 0.6:  # present and absent (hard negatives)
        asked = rng.sample(present, rng.randint(1, len(present))) + rng.sample(absent, 1)
    else:
        asked = rng.sample(present, rng.randint(1, len(present)))
    rng.shuffle(asked)
    solution = [{"bbox_2d": obj["bbox_2d"], "label": obj["label"]} for obj in scene if obj["label"] in asked]
    question = prompts.detection_question(asked) if rng.random() < 0.7 else prompts.ovd_question(asked)
    record = prompts.vlm_r1_record(image=name, question=question, solution=solution, record_id=index)
    # The asked labels (hard negatives included), as trainer.coco_datasets writes them: the evaluation
    # counts predictions of an asked but absent object against the APs. The trainer ignores the field.
    record["categories"] = asked
    return record


# Deliberately off the 28-pixel grid: the processor resizes every one of them.
DEFAULT_SIZES = ((100, 75), (90, 90), (130, 70), (70, 110))
SIZE_PRESETS = {
    "tiny": DEFAULT_SIZES,
    "small": ((150, 130), (140, 140), (165, 120), (125, 155)),
    "large": ((640, 480), (600, 450), (500, 500), (480, 640)),
}


def generate(out_dir: str | Path, n: int, seed: int = 0, sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES) -> Path:
    """Write ``n`` samples; returns the JSONL path (images under ``out_dir/images``)."""
    out = Path(out_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    path = out / "train.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(n):
            handle.write(json.dumps(make_sample(rng, image_dir, index, sizes)) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="tiny", choices=sorted(SIZE_PRESETS), help="image sizes (default: tiny)")
    args = parser.parse_args(argv)
    path = generate(args.out_dir, args.n, args.seed, SIZE_PRESETS[args.preset])
    print(f"{args.n} samples: {path} (images in {Path(args.out_dir) / 'images'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
