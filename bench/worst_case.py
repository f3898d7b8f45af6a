"""Worst-case requests against one local worker: time and the worker's peak memory (README,
"Reliability"). ``python -m bench.worst_case`` (a few minutes on 2 cores; Linux: reads /proc).

Each request is built to be expensive within the default budgets: the body limit filled with one
completion's boxes, the matching budget spent on identical boxes, many labels, explain over its
budget, an evaluation set filling the body.
"""

from __future__ import annotations

import json
import random
import re
import time

import httpx

from services.reward_api.local import LocalService

MIB = 1024 * 1024
ALL = ["format", "ap", "ap50", "od_length", "weighted_sum", "repetition", "cosine"]


def _answer(items: list) -> str:
    return f"<think>looking</think><answer>```json\n{json.dumps(items)}\n```</answer>"


def _peak_mb(pid: int) -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1)) // 1024


def cases() -> dict[str, tuple[str, dict]]:
    rng = random.Random(0)

    def box(label: str = "cat") -> dict:
        x, y = rng.randint(0, 500), rng.randint(0, 500)
        return {"bbox_2d": [x, y, x + rng.randint(5, 80), y + rng.randint(5, 80)], "label": label}

    same = {"bbox_2d": [10, 10, 50, 50], "label": "cat"}
    n = int(30 * MIB / 56)
    many = [{"bbox_2d": [i % 500, i % 300, i % 500 + 20, i % 300 + 20], "label": "cat"} for i in range(n)]
    labels = [{"bbox_2d": [i, i, i + 10, i + 10], "label": f"l{i}"} for i in range(7000)]
    twenty = [box() for _ in range(20)]
    batch = [{"completion": _answer(twenty) + " pad" * 900, "solution": [box() for _ in range(10)],
              "completion_tokens": 100} for _ in range(4096)]
    cats = [f"c{i}" for i in range(2000)]
    images = [{"completion": _answer([box(cats[(k * 20 + j) % 2000]) for j in range(20)]),
               "solution": [box(cats[(k * 10 + j) % 2000]) for j in range(10)]} for k in range(18000)]
    return {
        "4,096 distinct samples of 20 boxes, all 7 rewards": ("/v1/score", {"samples": batch, "rewards": ALL}),
        f"one completion of {n:,} boxes against 50, all 7 rewards": (
            "/v1/score", {"samples": [{"completion": _answer(many), "solution": many[:50], "completion_tokens": 5}],
                          "rewards": ALL}),
        "the matching budget: 5,000 x 10,000 identical boxes, weighted_sum": (
            "/v1/score", {"samples": [{"completion": _answer([same] * 5000), "solution": [same] * 10000}],
                          "rewards": ["weighted_sum"]}),
        "7,000 boxes of 7,000 labels, ap + od_length": (
            "/v1/score", {"samples": [{"completion": _answer(labels), "solution": labels}],
                          "rewards": ["ap", "od_length"]}),
        "explain over its budget, 3,000 samples of 20 boxes": (
            "/v1/score", {"samples": batch[:3000], "rewards": ALL, "explain": True}),
        "/v1/evaluate, 18,000 images, 2,000 categories": ("/v1/evaluate", {"images": images, "categories": cats}),
    }


def main() -> None:
    with LocalService.start(env={"REWARD_API_LOG_LEVEL": "warning"}) as service:
        pid = service.process.pid  # one worker: uvicorn serves in this process
        for name, (path, body) in cases().items():
            data = json.dumps(body).encode()
            before = _peak_mb(pid)
            start = time.perf_counter()
            answer = httpx.post(service.url + path, content=data, headers={"content-type": "application/json"},
                                timeout=600)
            print(f"{name}: HTTP {answer.status_code} in {time.perf_counter() - start:.1f} s, body "
                  f"{len(data) / MIB:.1f} MiB, worker peak memory {before} -> {_peak_mb(pid)} MB", flush=True)


if __name__ == "__main__":
    main()
