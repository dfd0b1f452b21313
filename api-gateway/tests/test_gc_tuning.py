"""Services tune the garbage collector once started (it took 8-13 % of their CPU under load)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
from api_gateway.main import create_app
from fastapi import FastAPI
from gateway_downstream import Downstream, gateway_settings
from infergate_common.gc_tuning import GC_THRESHOLDS

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


async def test_a_started_service_freezes_its_startup_objects_and_collects_less_often(
    app_client: AppClient, downstream: Downstream, redis_port: int
) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    app = create_app(gateway_settings(redis_port), transport=downstream.transport())
    try:
        async with app_client(app) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert gc.get_threshold() == GC_THRESHOLDS
            # The app, its routes and clients were created before startup ended: frozen.
            assert gc.get_freeze_count() > 10_000
            assert not any(obj is app for obj in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(700, 10, 10)
