"""What the held-out answers of an efficacy try say about sight, from its runs.tar.gz (as run for the
README's "Does GRPO teach the detector?"): python docs/efficacy/answer_stats.py TRY_DIR SEED [RUN]

* None answers: how many "None" answers fall on images that hold none of the asked objects, and how
  many images are like that (a model that cannot see would say None on them no more often).
* Asked labels: of the predicted labels the question asked, the share present in the image, against
  the share a label drawn at random from the asked ones would have (per prediction).
* Centres: the correlation of predicted and true box centres, x and y (each prediction against the
  first true box of its label).
"""

import json
import re
import sys
import tarfile

import numpy as np


def main(try_dir: str, seed: str, run: str = "sft") -> None:
    with tarfile.open(f"{try_dir}/runs.tar.gz") as archive:
        rows = [json.loads(line) for line in archive.extractfile(f"./seed{seed}/{run}/heldout_completions.jsonl")]
    nones = none_on_empty = empty_images = 0
    asked_predictions = asked_present = chance = 0.0
    predicted, true = [], []
    for row in rows:
        asked = [label for label in row["categories"] if label in row["question"]]
        present = {box["label"] for box in row["solution"]}
        empty = not (present & set(asked))
        empty_images += empty
        answer = re.search(r"<answer>(.*)</answer>", row["completion"], re.S)
        if answer and answer.group(1).strip() == "None":
            nones += 1
            none_on_empty += empty
            continue
        block = re.search(r"```json\n(.*)\n```", row["completion"], re.S)
        try:
            boxes = json.loads(block.group(1)) if block else []
        except json.JSONDecodeError:
            continue
        for box in boxes:
            if box.get("label") in asked:
                asked_predictions += 1
                asked_present += box["label"] in present
                chance += len(present & set(asked)) / len(asked)
            same = [s for s in row["solution"] if s["label"] == box.get("label")]
            if same and len(box.get("bbox_2d", [])) == 4:
                b, g = box["bbox_2d"], same[0]["bbox_2d"]
                predicted.append(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))
                true.append(((g[0] + g[2]) / 2, (g[1] + g[3]) / 2))
    p, t = np.array(predicted), np.array(true)
    print(
        json.dumps(
            {
                "images": len(rows),
                "none_answers": nones,
                "none_answers_on_empty_images": none_on_empty,
                "empty_images": empty_images,
                "asked_label_predictions": int(asked_predictions),
                "asked_label_present": round(asked_present / asked_predictions, 3),
                "asked_label_present_by_chance": round(chance / asked_predictions, 3),
                "centre_correlation_x": round(float(np.corrcoef(p[:, 0], t[:, 0])[0, 1]), 3),
                "centre_correlation_y": round(float(np.corrcoef(p[:, 1], t[:, 1])[0, 1]), 3),
                "centre_pairs": len(p),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
