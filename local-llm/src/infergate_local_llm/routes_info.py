"""Ollama's endpoints about the server and its models: /, version, tags, show, ps."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from infergate_local_llm.boundary import OllamaJSONResponse, read_body
from infergate_local_llm.deps import CatalogDep, ConfigDep
from infergate_local_llm.schemas import ShowRequest
from infergate_local_llm.specs import resolve_model

# Not a real Ollama release: the version Ollama's own development builds report.
OLLAMA_VERSION = "0.0.0"

router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"], response_class=PlainTextResponse)
async def root() -> str:
    """Health check: the body every Ollama client and probe expects."""
    return "Ollama is running"


@router.api_route("/api/version", methods=["GET", "HEAD"])
async def version() -> Response:
    """The server version."""
    return OllamaJSONResponse({"version": OLLAMA_VERSION})


@router.api_route("/api/tags", methods=["GET", "HEAD"])
async def tags(catalog: CatalogDep) -> Response:
    """The models this server answers to: each alias and the real name."""
    return OllamaJSONResponse({"models": catalog.tags()})


@router.get("/api/ps")
async def running(catalog: CatalogDep) -> Response:
    """The loaded models (the one model is always loaded)."""
    return OllamaJSONResponse({"models": catalog.running()})


@router.post("/api/show")
async def show(request: Request, catalog: CatalogDep, config: ConfigDep) -> Response:
    """Details of one model; 404 for a name this server does not answer to."""
    body = await read_body(request, ShowRequest)
    resolve_model(catalog, body.requested)
    return OllamaJSONResponse(catalog.show(max_tokens=config.max_tokens))
