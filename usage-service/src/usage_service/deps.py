"""Typed dependencies of usage-service's routes."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from usage_service.metering import Metering


def get_metering(request: Request) -> Metering:
    return cast(Metering, request.state.metering)


MeteringDep = Annotated[Metering, Depends(get_metering)]
