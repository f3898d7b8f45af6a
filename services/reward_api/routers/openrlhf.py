"""POST /v1/openrlhf: drop-in for OpenRLHF's remote reward model (``--reward.remote_url``).

OpenRLHF >= 0.10 posts one sample per request right after its generation (query = the decoded
prompt + response, image and video pads expanded); older releases post the whole rollout batch.
Both are scored here: concurrent one-sample requests are coalesced in the worker (routers/deps.py).
"""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response

from shared.contract import OpenRLHFRequest, OpenRLHFResponse

from .deps import BATCH_ERRORS, CurrentSettings, DefaultPlan, Runner, json_body_schema, score_on_body
from .request_handling import prepare_openrlhf, score_jobs

router = APIRouter(tags=["rewards"])


@router.post(
    "/openrlhf",
    response_model=OpenRLHFResponse,
    responses=BATCH_ERRORS,
    openapi_extra=json_body_schema(OpenRLHFRequest),
)
async def openrlhf(request: Request, runner: Runner, settings: CurrentSettings, defaults: DefaultPlan) -> Response:
    """``rewards``: the weighted total of the server's default rewards; ``scores``: the same divided by
    the sum of the weights' magnitudes (in [0, 1] for the default set); ``extra_logs``: each reward."""
    return await score_on_body(
        request, runner, partial(prepare_openrlhf, settings=settings, defaults=defaults), score_jobs
    )
