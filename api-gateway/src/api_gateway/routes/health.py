"""Gateway readiness: Redis and the three internal services must all be ready."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from infergate_common.app import READINESS_RESPONSES, ReadinessResponse

from api_gateway.deps import ResourcesDep

router = APIRouter(tags=["health"])


@router.get("/readyz", response_model=ReadinessResponse, responses=READINESS_RESPONSES)
async def readyz(resources: ResourcesDep) -> JSONResponse:
    """Readiness with details (on the gateway's own port): 200 when Redis, auth, usage and ai
    are ready, else 503 naming what is not. Checked at most every 2 s."""
    results = await resources.readiness.current()
    checks = {name: "ok" if ok else "down" for name, ok in results.items()}
    if all(results.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    down = [name for name, ok in results.items() if not ok]
    return JSONResponse(
        {"status": "unavailable", "checks": checks, "message": f"Not ready: {', '.join(down)}"},
        503,
    )


@router.get(
    "/readyz/public",
    response_model=ReadinessResponse,
    responses=READINESS_RESPONSES,
    include_in_schema=False,
)
async def public_readyz(resources: ResourcesDep) -> JSONResponse:
    """What nginx answers for /readyz: ready or not, never which part is down."""
    if all((await resources.readiness.current()).values()):
        return JSONResponse({"status": "ready", "checks": {}})
    return JSONResponse({"status": "unavailable", "checks": {}}, 503)
