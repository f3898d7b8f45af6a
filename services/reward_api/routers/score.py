"""POST /v1/score: a batch of samples, one or more rewards, one round trip."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from shared.contract import ScoreRequest, ScoreResponse

from .batch import prepare_score, score_jobs
from .deps import BATCH_ERRORS, BatchRunner, get_runner, json_body_schema, score_on_body

router = APIRouter(tags=["rewards"])


@router.post("/score", response_model=ScoreResponse, responses=BATCH_ERRORS, openapi_extra=json_body_schema(ScoreRequest))
async def score(request: Request, runner: BatchRunner = Depends(get_runner)) -> Response:
    state = request.app.state
    return await score_on_body(request, runner, partial(prepare_score, settings=state.settings,
                                                        defaults=state.defaults), score_jobs)
