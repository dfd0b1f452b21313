"""Ollama's generation endpoints: /api/chat and /api/generate."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from infergate_local_llm.boundary import OllamaJSONResponse, read_body
from infergate_local_llm.deps import CatalogDep, ConfigDep, WorkerDep
from infergate_local_llm.responding import respond
from infergate_local_llm.schemas import ChatRequest, GenerateRequest
from infergate_local_llm.specs import chat_spec, generate_spec, resolve_model
from infergate_local_llm.wire import Envelope

router = APIRouter()


@router.post("/api/chat")
async def chat(
    request: Request, catalog: CatalogDep, config: ConfigDep, worker: WorkerDep
) -> Response:
    """Answer a conversation with the model, streamed as NDJSON unless `stream` is false."""
    received_ns = time.monotonic_ns()
    body = await read_body(request, ChatRequest)
    envelope = Envelope("chat", resolve_model(catalog, body.model))
    if not body.messages:
        return OllamaJSONResponse(envelope.load(unload=body.unloads))
    spec = chat_spec(body, model=envelope.model, max_tokens=config.max_tokens)
    job = worker.submit(spec, kind="chat")
    return await respond(request, job, envelope, stream=body.streaming, received_ns=received_ns)


@router.post("/api/generate")
async def generate(
    request: Request, catalog: CatalogDep, config: ConfigDep, worker: WorkerDep
) -> Response:
    """Complete a prompt (templated unless `raw`), streamed as NDJSON unless `stream` is false."""
    received_ns = time.monotonic_ns()
    body = await read_body(request, GenerateRequest)
    model = resolve_model(catalog, body.model)
    envelope = Envelope("generate", model, with_context=not body.raw)
    if not body.prompt:
        return OllamaJSONResponse(envelope.load(unload=body.unloads))
    spec = generate_spec(body, model=model, max_tokens=config.max_tokens)
    job = worker.submit(spec, kind="generate")
    return await respond(request, job, envelope, stream=body.streaming, received_ns=received_ns)
