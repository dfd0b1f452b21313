"""The FastAPI application: the model is loaded in the lifespan, before the first request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from infergate_local_llm.boundary import install_error_handlers
from infergate_local_llm.catalog import ModelCatalog, ModelFacts
from infergate_local_llm.config import ServerConfig
from infergate_local_llm.deps import Resources
from infergate_local_llm.engine import Engine, find_model_file
from infergate_local_llm.logs import AccessLogMiddleware
from infergate_local_llm.routes_generation import router as generation_router
from infergate_local_llm.routes_info import router as info_router
from infergate_local_llm.worker import GenerationWorker

log = structlog.get_logger(__name__)


def _load(config: ServerConfig) -> tuple[Engine, ModelFacts]:
    engine = Engine(find_model_file(), n_ctx=config.n_ctx, n_threads=config.n_threads)
    return engine, ModelFacts.of(engine)


def create_app(
    config: ServerConfig | None = None, *, stopping: threading.Event | None = None
) -> FastAPI:
    """Build the app; nothing is loaded until the lifespan starts.

    `stopping`, once set, ends running generations and skips queued ones (shutdown).
    """
    config = config or ServerConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine, facts = await asyncio.to_thread(_load, config)
        worker = GenerationWorker(engine, closing=stopping)
        catalog = ModelCatalog(facts, aliases=config.aliases)
        app.state.resources = Resources(config=config, catalog=catalog, worker=worker)
        log.info(
            "model_loaded",
            model=facts.path.name,
            names=list(catalog.names),
            n_ctx=config.n_ctx,
            n_threads=config.n_threads,
            max_tokens=config.max_tokens,
        )
        try:
            yield
        finally:
            await worker.aclose()

    app = FastAPI(title="infergate local LLM (Ollama API)", lifespan=lifespan)
    app.include_router(info_router)
    app.include_router(generation_router)
    install_error_handlers(app)
    app.add_middleware(AccessLogMiddleware)
    return app
