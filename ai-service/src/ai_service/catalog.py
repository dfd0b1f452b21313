"""The models ai-service can answer for: the union of what its available backends list (Ollama's
/api/tags), each name kept only where the routes send that model to that backend."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import ollama

from ai_service.backend import Backend
from ai_service.backend_pool import BackendPool
from ai_service.llm_errors import LLM_ERRORS, translate_llm_error
from ai_service.routing_config import canonical_model
from ai_service.schemas import ModelInfo

Listed = tuple[Backend, ollama.ListResponse]


async def catalog(pool: BackendPool) -> list[ModelInfo]:
    """By name, with what the backends say about each; 503/504 if no backend answers."""
    backends = [b for b in pool.backends if b.breaker.allows_call()] or list(pool.backends)
    answers = await asyncio.gather(*(b.client.list() for b in backends), return_exceptions=True)
    listed: list[Listed] = []
    failures: list[BaseException] = []
    for backend, answer in zip(backends, answers, strict=True):
        if isinstance(answer, BaseException):
            failures.append(answer)
        else:
            listed.append((backend, answer))
    if not listed:
        first = failures[0]
        if isinstance(first, LLM_ERRORS):
            raise translate_llm_error(first, model="*") from first
        raise first
    return _merge(pool, listed)


def _merge(pool: BackendPool, listed: Iterable[Listed]) -> list[ModelInfo]:
    by_digest: dict[str, set[str]] = {}
    found: dict[str, ModelInfo] = {}
    for backend, listing in listed:
        for model in listing.models:
            if not model.model:
                continue
            name = canonical_model(model.model)
            if not pool.serves(backend, name):
                continue
            details = model.details
            found.setdefault(
                name,
                ModelInfo(
                    name=name,
                    family=details.family if details else None,
                    parameterSize=details.parameter_size if details else None,
                    quantization=details.quantization_level if details else None,
                ),
            )
            if model.digest:
                by_digest.setdefault(model.digest, set()).add(name)
    for names in by_digest.values():
        for name in names:
            found[name].sameAs = sorted(set(found[name].sameAs) | (names - {name}))
    return [found[name] for name in sorted(found)]
