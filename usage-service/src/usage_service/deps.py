"""Typed dependencies of usage-service's routes: all from the one `Resources` container."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from infergate_common.app import resources_dependency
from infergate_common.mongo import Mongo

from usage_service.activity import ActivityReports
from usage_service.metering import Metering
from usage_service.request_log import RequestLogRepository
from usage_service.resources import Resources

get_resources = resources_dependency(Resources)
ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_metering(resources: ResourcesDep) -> Metering:
    return resources.metering


async def get_request_logs(resources: ResourcesDep) -> RequestLogRepository:
    return resources.request_logs


async def get_reports(resources: ResourcesDep) -> ActivityReports:
    return resources.reports


async def get_mongo(resources: ResourcesDep) -> Mongo:
    return resources.mongo


MeteringDep = Annotated[Metering, Depends(get_metering)]
RequestLogsDep = Annotated[RequestLogRepository, Depends(get_request_logs)]
ReportsDep = Annotated[ActivityReports, Depends(get_reports)]
