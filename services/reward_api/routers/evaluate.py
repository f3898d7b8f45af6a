"""POST /v1/evaluate: dataset-level metrics of an evaluation set (COCO mAP, AP50, greedy precision
and recall at IoU 0.5, OVDEval NMS-AP, per category), completions parsed as the rewards parse them.

The whole set comes in one request, since AP over a dataset cannot be merged from parts; so the
per-request sample limit (REWARD_API_MAX_SAMPLES) does not apply here, only the body-size limit.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from starlette.responses import Response

from shared.contract import EvaluateRequest, EvaluateResponse

from ..engine.evaluation import EvaluationInputError, evaluate_dataset
from ..responses import encode_json
from ..settings import Settings
from .deps import BATCH_ERRORS, CurrentSettings, Runner, json_body_schema, run_on_body
from .request_handling import RequestError, parse_body

router = APIRouter(tags=["evaluation"])


def evaluate_body(body: bytes, settings: Settings) -> bytes:
    """All of POST /v1/evaluate but the I/O; runs in the batch thread (parsing is CPU work too)."""
    request = parse_body(EvaluateRequest, body)
    images = [(image.completion, image.solution) for image in request.images]
    try:
        result = evaluate_dataset(
            images,
            request.categories,
            max_categories=settings.max_categories,
            max_gt_boxes=settings.max_gt_boxes,
            max_box_pairs=settings.max_box_pairs,
        )
    except EvaluationInputError as exc:
        raise RequestError(str(exc)) from None
    return encode_json(asdict(result))


@router.post(
    "/evaluate",
    response_model=EvaluateResponse,
    responses=BATCH_ERRORS,
    openapi_extra=json_body_schema(EvaluateRequest),
)
async def evaluate(request: Request, runner: Runner, settings: CurrentSettings) -> Response:
    return await run_on_body(request, runner, evaluate_body, settings)
