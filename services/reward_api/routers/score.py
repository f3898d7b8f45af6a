"""POST /v1/score: a batch of samples, one or more rewards, one round trip."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response

from shared.contract import ScoreRequest, ScoreResponse

from .deps import BATCH_ERRORS, CurrentSettings, DefaultPlan, Runner, json_body_schema, score_on_body
from .request_handling import prepare_score, score_jobs

router = APIRouter(tags=["rewards"])


@router.post(
    "/score", response_model=ScoreResponse, responses=BATCH_ERRORS, openapi_extra=json_body_schema(ScoreRequest)
)
async def score(request: Request, runner: Runner, settings: CurrentSettings, defaults: DefaultPlan) -> Response:
    return await score_on_body(
        request, runner, partial(prepare_score, settings=settings, defaults=defaults), score_jobs
    )
