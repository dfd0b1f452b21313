"""Gateway readiness: Redis and the three internal services must all be ready."""

from __future__ import annotations

import asyncio

import redis.asyncio as redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from infergate_common.app import READINESS_RESPONSES, ReadinessResponse
from infergate_common.errors import AppError
from infergate_common.http_client import InternalServiceClient
from redis.exceptions import RedisError

router = APIRouter(tags=["health"])


async def _redis_ready(client: redis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except RedisError:
        return False


async def _service_ready(client: InternalServiceClient) -> bool:
    try:
        await client.call("GET", "/readyz", call_timeout=2.0)
    except AppError:
        return False
    return True


@router.get("/readyz", response_model=ReadinessResponse, responses=READINESS_RESPONSES)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when Redis, auth, usage and ai are ready, else 503 naming what is not."""
    state = request.state
    names = ("redis", "auth", "usage", "ai")
    results = await asyncio.gather(
        _redis_ready(state.redis),
        _service_ready(state.auth_client),
        _service_ready(state.usage_client),
        _service_ready(state.ai_client),
    )
    checks = {name: "ok" if ok else "down" for name, ok in zip(names, results, strict=True)}
    if all(results):
        return JSONResponse({"status": "ready", "checks": checks})
    down = [name for name, ok in zip(names, results, strict=True) if not ok]
    return JSONResponse(
        {"status": "unavailable", "checks": checks, "message": f"Not ready: {', '.join(down)}"},
        503,
    )
