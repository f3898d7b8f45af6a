"""POST /v1/evaluate: dataset-level metrics of an evaluation set (COCO mAP, AP50, greedy precision
and recall at IoU 0.5, OVDEval NMS-AP, per category), completions parsed as the rewards parse them.

The whole set comes in one request, since AP over a dataset cannot be merged from parts; so the
per-request sample limit (REWARD_API_MAX_SAMPLES) does not apply here, only the body-size limit.
"""

from __future__ import annotations

from dataclasses import asdict

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from shared.contract import ErrorBody, EvaluateRequest, EvaluateResponse

from ..engine.evaluation import EvaluationInputError, evaluate_dataset
from .batch import RequestError, parse_body
from .deps import BatchRunner, JSONBytes, get_runner

router = APIRouter(tags=["evaluation"])

_OPENAPI = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": EvaluateRequest.model_json_schema()}}}
}
_ERRORS = {413: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def evaluate_body(body: bytes) -> bytes:
    """All of POST /v1/evaluate but the I/O; runs in the batch thread (parsing is CPU work too)."""
    request = parse_body(EvaluateRequest, body)
    images = [(image.completion, image.solution) for image in request.images]
    try:
        result = evaluate_dataset(images, request.categories)
    except EvaluationInputError as exc:
        raise RequestError(str(exc)) from None
    return orjson.dumps(asdict(result))


@router.post("/evaluate", response_model=EvaluateResponse, responses=_ERRORS, openapi_extra=_OPENAPI)
async def evaluate(request: Request, runner: BatchRunner = Depends(get_runner)) -> Response:
    async with runner.slot():  # 503 at once when this worker's queue is full, before reading the body
        body = await request.body()
        return JSONBytes(await runner.run(evaluate_body, body))
