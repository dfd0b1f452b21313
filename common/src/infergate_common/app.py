"""The app shell every service shares: middleware, error handlers and liveness endpoints."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.types import Lifespan, Receive, Scope, Send

from infergate_common.errors import (
    ErrorBody,
    ErrorRenderer,
    install_error_handlers,
    render_infergate_error,
)
from infergate_common.gc_tuning import with_gc_tuning
from infergate_common.logs import configure_logging
from infergate_common.metrics import HttpMetrics, MetricsOff, metrics_router
from infergate_common.request_context import RequestContextMiddleware
from infergate_common.settings import ServiceSettings
from infergate_common.tracing import (
    UnsampledRequestsUninstrumented,
    configure_tracing,
    server_telemetry,
    skip_server_span,
    untraced_request,
)


class HealthResponse(BaseModel):
    status: str
    service: str
    uptime: float
    timestamp: str


class LiveResponse(BaseModel):
    status: str


class ReadinessResponse(BaseModel):
    """`/readyz`: 200 when every check is ok, else 503 with the same shape."""

    status: str
    checks: dict[str, str]
    message: str | None = None


R = TypeVar("R")

READINESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"model": ReadinessResponse, "description": "Not ready"}
}


class ServiceApp(FastAPI):
    """FastAPI whose OpenAPI document shows validation errors as they are answered: 400 with the
    error body (see `install_error_handlers`), not FastAPI's default 422; and, when this process
    traces, whose requests without a server span (`untraced`: probes, and those whose trace is
    not sampled) skip FastAPI's telemetry altogether."""

    untraced: Callable[[MutableMapping[str, Any]], bool] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        untraced = self.untraced
        if untraced is not None and scope["type"] == "http" and untraced(scope):
            skip_server_span(scope)
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:
            return self.openapi_schema
        document = super().openapi()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for path_item in document.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is None or "400" in responses:
                    continue
                schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
                responses["400"] = {
                    "description": "Invalid request",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    },
                }
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        self.openapi_schema = document
        return document


def _health_router(service: str) -> APIRouter:
    router = APIRouter(tags=["health"])
    started = time.monotonic()

    @router.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """Process status, kept from the original (no dependency checks)."""
        return HealthResponse(
            status="OK",
            service=service,
            uptime=round(time.monotonic() - started, 3),
            timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        )

    @router.get("/healthz", response_model=LiveResponse)
    async def healthz() -> LiveResponse:
        """Liveness: the process answers; no I/O."""
        return LiveResponse(status="ok")

    return router


def create_service_app(
    *,
    settings: ServiceSettings,
    lifespan: Lifespan[Any],
    title: str,
    description: str = "",
    field_messages: Mapping[str, str] | None = None,
    render_error: ErrorRenderer = render_infergate_error,
    public_docs: bool = True,
    internal: bool = False,
) -> FastAPI:
    """A FastAPI app with InferGate's middleware, error handlers and health routes. `internal`:
    called by the gateway, whose trace context decides whether a request is traced."""
    tracing = configure_tracing(settings.service_name)  # only with OTEL_EXPORTER_OTLP_ENDPOINT
    configure_logging(
        service=settings.service_name,
        level=settings.log_level,
        fmt=settings.log_format,
        trace_ids=tracing,
    )
    app = ServiceApp(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=with_gc_tuning(lifespan),
        docs_url="/docs" if public_docs else None,
        redoc_url=None,
        telemetry=server_telemetry(tracing),
    )
    if tracing:
        app.untraced = untraced_request(sampled_by_caller=internal)
    app.state.settings = settings
    # This app's metrics (served at /metrics); what else a service records goes in it too.
    on = settings.metrics_enabled
    registry = CollectorRegistry(auto_describe=True) if on else MetricsOff()
    app.state.metrics_registry = registry
    install_error_handlers(app, field_messages=field_messages, render=render_error)
    if tracing:
        app.add_middleware(UnsampledRequestsUninstrumented)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=HttpMetrics.create(registry) if on else None,
        service=settings.service_name,
    )
    app.include_router(_health_router(settings.service_name))
    if on:
        app.include_router(metrics_router(registry))
    return app


def metrics_registry(app: FastAPI) -> CollectorRegistry:
    """The registry `create_service_app` made for `app` (to add a service's own metrics)."""
    registry: CollectorRegistry = app.state.metrics_registry
    return registry


def resources_dependency(kind: type[R]) -> Callable[[Request], Awaitable[R]]:
    """The dependency that hands routes a service's long-lived objects: one frozen container of
    type `kind`, made by the service's `open_resources` and yielded by its lifespan as
    `{"resources": ...}`."""

    async def resources(request: Request) -> R:
        found = request.state.resources
        if not isinstance(found, kind):
            raise TypeError(f"the lifespan yielded no {kind.__name__}")
        return found

    return resources
