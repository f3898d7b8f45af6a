"""POST /v1/openrlhf: drop-in for OpenRLHF's remote reward model (--remote_rm_url)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from shared.contract import ErrorBody, OpenRLHFRequest, OpenRLHFResponse

from .batch import openrlhf_body
from .deps import BatchRunner, JSONBytes, get_runner

router = APIRouter(tags=["rewards"])

_OPENAPI = {"requestBody": {"required": True, "content": {"application/json": {"schema": OpenRLHFRequest.model_json_schema()}}}}
_ERRORS = {413: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


@router.post("/openrlhf", response_model=OpenRLHFResponse, responses=_ERRORS, openapi_extra=_OPENAPI)
async def openrlhf(request: Request, runner: BatchRunner = Depends(get_runner)) -> Response:
    """Rewards are the weighted total of the server's default rewards; extra_logs has each one."""
    async with runner.slot():
        body = await request.body()
        state = request.app.state
        return JSONBytes(await runner.run(openrlhf_body, body, state.settings, state.defaults))
