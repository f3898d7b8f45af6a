"""GET /v1/rewards: what the server computes, and its default reward set and weights."""

from __future__ import annotations

from fastapi import APIRouter

from ..engine import registry
from .deps import DefaultPlan

router = APIRouter(tags=["rewards"])


@router.get("/rewards")
async def rewards(defaults: DefaultPlan) -> dict:
    return {
        "rewards": registry.catalogue(),
        "defaults": {
            "rewards": defaults.names,
            "weights": defaults.weights,
            "versions": {r.name: r.version for r in defaults.rewards},
        },
    }
