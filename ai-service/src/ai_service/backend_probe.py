"""Active health checks of the model backends: a background prober, and /readyz's check.

The prober asks each backend that is out of rotation (circuit open, or a model it answered 404
for) for its model list (GET /api/tags) every BACKEND_PROBE_INTERVAL_SECONDS: an answer half-opens
its circuit (the next call is the trial that closes it) and gives back the models it lists.
Backends in rotation are not probed: their calls are the check.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import structlog
from infergate_common.circuit_breaker import CircuitState
from infergate_common.tasks import cancel_and_wait

from ai_service.backend import Backend
from ai_service.backend_pool import BackendPool
from ai_service.llm_errors import LLM_ERRORS
from ai_service.routing_config import canonical_model

_log = structlog.get_logger("backend_probe")
PROBE_TIMEOUT_S = 2.0


async def listed_models(backend: Backend) -> set[str] | None:
    """The canonical names `backend` lists, or None if it does not answer in time."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            listing = await backend.client.list()
    except (*LLM_ERRORS, TimeoutError) as exc:
        _log.debug("backend_probe_failed", backend=backend.name, error_type=type(exc).__name__)
        return None
    return {canonical_model(model.model) for model in listing.models if model.model}


class BackendProber:
    def __init__(self, pool: BackendPool, *, interval_s: float) -> None:
        self._pool = pool
        self._interval_s = interval_s

    def start(self, stack: AsyncExitStack) -> None:
        """Run until the lifespan ends (call inside the event loop)."""
        task = asyncio.create_task(self._run(), name="backend-prober")
        stack.push_async_callback(cancel_and_wait, task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.probe_once()

    async def probe_once(self) -> None:
        due = [b for b in self._pool.backends if b.missing or b.breaker.state is CircuitState.OPEN]
        if due:
            await asyncio.gather(*(self._probe(backend) for backend in due))

    async def _probe(self, backend: Backend) -> None:
        models = await listed_models(backend)
        if models is None:
            return
        if backend.breaker.state is CircuitState.OPEN:
            _log.info("backend_answers_probe", backend=backend.name)
            backend.breaker.half_open()
        found = backend.missing & models
        if found:
            _log.info("backend_has_model_again", backend=backend.name, models=sorted(found))
            backend.missing -= found


async def readiness(pool: BackendPool) -> tuple[bool, dict[str, str]]:
    """Ready when every checked model has a backend that answers, is not ejected and has not
    said it lacks the model; the checks name each backend's state (or `unreachable`)."""
    answers = await asyncio.gather(*(listed_models(backend) for backend in pool.backends))
    up = {
        backend.name
        for backend, models in zip(pool.backends, answers, strict=True)
        if models is not None and backend.breaker.state is not CircuitState.OPEN
    }
    checks = {
        f"backend:{backend.name}": backend.breaker.state.value
        if models is not None
        else "unreachable"
        for backend, models in zip(pool.backends, answers, strict=True)
    }
    ready = True
    for model in pool.checked_models:
        served = any(
            backend.name in up and model not in backend.missing
            for group in pool.groups_for(model)
            for backend in group.backends
        )
        checks[f"model:{model}"] = "ok" if served else "no_backend"
        ready = ready and served
    return ready, {"llm": "ok" if ready else "down", **checks}
