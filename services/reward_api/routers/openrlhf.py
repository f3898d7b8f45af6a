"""POST /v1/openrlhf: drop-in for OpenRLHF's remote reward model (--remote_rm_url)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from shared.contract import OpenRLHFRequest, OpenRLHFResponse

from .request_handling import openrlhf_body
from .deps import BATCH_ERRORS, BatchRunner, get_runner, json_body_schema, run_on_body

router = APIRouter(tags=["rewards"])


@router.post("/openrlhf", response_model=OpenRLHFResponse, responses=BATCH_ERRORS,
             openapi_extra=json_body_schema(OpenRLHFRequest))
async def openrlhf(request: Request, runner: BatchRunner = Depends(get_runner)) -> Response:
    """Rewards are the weighted total of the server's default rewards; extra_logs has each one."""
    state = request.app.state
    return await run_on_body(request, runner, openrlhf_body, state.settings, state.defaults)
