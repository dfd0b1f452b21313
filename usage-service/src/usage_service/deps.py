"""Typed dependencies of usage-service's routes."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from usage_service.metering import Metering
from usage_service.request_log import RequestLogRepository


async def get_metering(request: Request) -> Metering:
    return cast(Metering, request.state.metering)


async def get_request_logs(request: Request) -> RequestLogRepository:
    return cast(RequestLogRepository, request.state.request_logs)


MeteringDep = Annotated[Metering, Depends(get_metering)]
RequestLogsDep = Annotated[RequestLogRepository, Depends(get_request_logs)]
