"""One generation at a time, on one thread, in arrival order.

llama.cpp is not re-entrant, so every request goes through a single-thread executor: its queue
is FIFO, which makes the order fair. Each job carries a cancellation flag that the request sets
when its client goes away; a running job checks it between tokens, a queued one is skipped.
Events travel back to the request's asyncio queue with `call_soon_threadsafe`, so the event
loop never waits on llama.cpp.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import structlog

from infergate_local_llm.engine import Engine
from infergate_local_llm.generation import (
    Event,
    Failed,
    GenerationCancelled,
    GenerationSpec,
    InvalidRequest,
    TextPiece,
)

log = structlog.get_logger(__name__)

# Not an HTTP answer anyone reads (the client is gone); it only releases the waiting request.
CLIENT_CLOSED = 499
SHUTTING_DOWN = 503


class GenerationJob:
    """A queued or running generation, seen from the request that submitted it."""

    def __init__(self, spec: GenerationSpec, *, kind: str, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.kind = kind
        self.submitted_ns = time.monotonic_ns()
        self.started_ns = 0  # written by the worker before its first event
        self._loop = loop
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop the generation (between two tokens) or skip it if it is still queued."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    async def next_event(self) -> Event:
        return await self._events.get()

    def emit(self, event: Event) -> None:
        """Called from the worker thread."""
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)


class GenerationWorker:
    """Owns the engine and the one thread allowed to use it."""

    def __init__(self, engine: Engine, *, closing: threading.Event | None = None) -> None:
        self._engine = engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-worker")
        # Set by the shutdown signal handler (see __main__), before uvicorn waits for streams.
        self._closing = closing or threading.Event()

    def submit(self, spec: GenerationSpec, *, kind: str) -> GenerationJob:
        job = GenerationJob(spec, kind=kind, loop=asyncio.get_running_loop())
        self._executor.submit(self._run, job)
        log.debug("generation_queued", kind=kind)
        return job

    async def aclose(self) -> None:
        """Stop the running generation, skip the queued ones, and wait for the thread."""
        self._closing.set()
        # Queued jobs still run (and are skipped at once) so that every waiter gets its event.
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def _stopped(self, job: GenerationJob) -> bool:
        return job.cancelled or self._closing.is_set()

    def _stop_reason(self) -> Failed:
        if self._closing.is_set():
            return Failed(SHUTTING_DOWN, "the server is shutting down")
        return Failed(CLIENT_CLOSED, "client closed the request")

    def _run(self, job: GenerationJob) -> None:
        job.started_ns = time.monotonic_ns()
        waited_ms = (job.started_ns - job.submitted_ns) // 1_000_000
        if self._stopped(job):
            log.info("generation_skipped", kind=job.kind, waited_ms=waited_ms)
            job.emit(self._stop_reason())
            return
        try:
            finished = self._engine.run(
                job.spec,
                emit=lambda text: job.emit(TextPiece(text)),
                cancelled=lambda: self._stopped(job),
            )
        except GenerationCancelled as cancelled:
            log.info("generation_cancelled", kind=job.kind, eval_count=cancelled.eval_count)
            job.emit(self._stop_reason())
        except InvalidRequest as error:
            job.emit(Failed(400, str(error)))
        except Exception:
            log.exception("generation_failed", kind=job.kind)
            job.emit(Failed(500, "the local model failed to generate a response"))
        else:
            log.info(
                "generation_finished",
                kind=job.kind,
                done_reason=finished.done_reason,
                prompt_eval_count=finished.prompt_eval_count,
                eval_count=finished.eval_count,
                waited_ms=waited_ms,
                prompt_eval_ms=finished.prompt_eval_duration_ns // 1_000_000,
                eval_ms=finished.eval_duration_ns // 1_000_000,
            )
            job.emit(finished)
