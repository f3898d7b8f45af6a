"""POST /v1/evaluate through the real service (tests/service/conftest.py: token, 100-sample limit)."""

from __future__ import annotations

import json

import httpx
import pytest

from services.reward_api.engine.evaluation import evaluate_dataset
from shared.contract import EvaluateResponse

CAT = [0, 0, 10, 10]


def answer(*items) -> str:
    return f"<think>t</think><answer>```json\n{json.dumps(list(items))}\n```</answer>"


def box(label, bbox) -> dict:
    return {"bbox_2d": bbox, "label": label}


def text_solution(*items) -> str:
    return f"<answer>```json\n{json.dumps(list(items))}\n```</answer>"


HARD_NEGATIVE_SET = [
    {"completion": answer(box("dog", CAT), box("cat", CAT)), "solution": text_solution(box("cat", CAT))},
    {"completion": answer(box("dog", CAT)), "solution": [box("dog", CAT)]},
    {"completion": "<answer>None</answer>", "solution": "None"},
]


def test_evaluate_answers_the_metrics_of_the_set(client: httpx.Client):
    response = client.post("/v1/evaluate", json={"images": HARD_NEGATIVE_SET, "categories": ["cat", "dog", "bird"]})
    assert response.status_code == 200, response.text
    body = response.json()
    # By hand (tests/engine/test_evaluation.py): mAP 0.75, NMS-AP 0.25, precision 2/3, recall 1.
    assert body["ap"] == pytest.approx(0.75, abs=1e-12)
    assert body["nms_ap"] == pytest.approx(0.25, abs=1e-12)
    assert (body["n_images"], body["n_answered"], body["n_gt"], body["n_pred"], body["matches"]) == (3, 3, 2, 3, 2)
    assert body["precision"] == pytest.approx(2 / 3) and body["recall"] == 1.0
    assert [row["category"] for row in body["per_category"]] == ["cat", "dog", "bird"]
    bird = body["per_category"][2]
    assert (bird["ap"], bird["precision"], bird["recall"]) == (None, None, None)
    # The engine's result (a dataclass) and the documented wire model (shared/contract.py) are two
    # definitions: the answer must be exactly the model, no field missing and none extra.
    assert EvaluateResponse.model_validate(body).model_dump() == body


def test_evaluate_equals_the_engine(client: httpx.Client):
    images = [(image["completion"], image["solution"]) for image in HARD_NEGATIVE_SET]
    expected = json.loads(json.dumps(evaluate_dataset(images).__dict__, default=lambda o: o.__dict__))
    assert client.post("/v1/evaluate", json={"images": HARD_NEGATIVE_SET}).json() == expected


def test_whole_set_is_one_request_beyond_the_per_request_sample_limit(client: httpx.Client):
    images = [{"completion": answer(box("cat", CAT)), "solution": [box("cat", CAT)]}] * 150  # limit is 100
    response = client.post("/v1/evaluate", json={"images": images})
    assert response.status_code == 200, response.text
    assert (response.json()["n_images"], response.json()["ap"]) == (150, 1.0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"images": [{"completion": "x", "solution": [{"bbox_2d": [1, 2], "label": "cat"}]}]}, "images[0].solution"),
        ({"images": [{"completion": "x", "solution": [box("cat", CAT)]}], "categories": ["dog"]}, "categories"),
        ({"images": [{"completion": 3, "solution": "None"}]}, "images[0].completion"),
        ({"images": [], "iou": 0.5}, "iou"),
        ({}, "images"),
    ],
)
def test_wrong_requests_are_422_naming_the_field(client: httpx.Client, body, message):
    response = client.post("/v1/evaluate", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_evaluate_needs_the_token(server):
    response = httpx.post(server.url + "/v1/evaluate", json={"images": []})
    assert response.status_code == 401


def test_evaluate_is_in_the_openapi_document(client: httpx.Client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "EvaluateRequest" in json.dumps(paths["/v1/evaluate"]["post"]["requestBody"])
