"""POST /v1/score: a batch of samples, one or more rewards, one round trip."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from shared.contract import ErrorBody, ScoreRequest, ScoreResponse

from .batch import score_body
from .deps import BatchRunner, JSONBytes, get_runner

router = APIRouter(tags=["rewards"])

# The body is read as bytes and validated in the batch thread (see batch.parse_body), so FastAPI
# does not see a body parameter; this puts the wire model into the OpenAPI document anyway.
_OPENAPI = {"requestBody": {"required": True, "content": {"application/json": {"schema": ScoreRequest.model_json_schema()}}}}
_ERRORS = {413: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


@router.post("/score", response_model=ScoreResponse, responses=_ERRORS, openapi_extra=_OPENAPI)
async def score(request: Request, runner: BatchRunner = Depends(get_runner)) -> Response:
    async with runner.slot():  # 503 at once when this worker's queue is full, before reading the body
        body = await request.body()
        state = request.app.state
        return JSONBytes(await runner.run(score_body, body, state.settings, state.defaults))
