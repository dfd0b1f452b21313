"""The response cache: exact-match answers kept in Redis, so a repeated request is answered
without calling the model.

The key is a hash of everything that shapes the answer: the model, the messages, the output cap
and every sampling option, and the user unless the operator shares answers (CACHE_SHARED). Only
deterministic requests are cached (temperature 0 or a fixed seed) unless CACHE_ALL_REQUESTS: a
sampled answer repeated is not what the caller asked for. An answer is kept as the chunks the
model sent, so a streamed hit replays the same events, with its token counts (what a hit is
logged with and, with CACHE_HIT_CHARGE=full, charged).

Bounds: CACHE_TTL_SECONDS per entry, CACHE_MAX_ENTRY_BYTES per answer (larger ones are not
kept) and CACHE_MAX_ENTRIES over everyone (an index sorted by time: the oldest go first). Redis
failing is a miss, never an error: the cache only ever saves work.

`Cache-Control: no-cache` on a request skips the lookup (the fresh answer replaces the kept
one); `no-store` skips the cache both ways.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from enum import StrEnum

import structlog
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from api_gateway.config import Settings
from api_gateway.redis_store import RedisClient
from api_gateway.schemas import Generation, ModelCall

_log = structlog.get_logger("response_cache")
_PREFIX = "infergate:cache:"
_INDEX = "infergate:cache-index"


class CacheResult(StrEnum):
    HIT = "hit"
    MISS = "miss"


class CachedAnswer(BaseModel):
    """An answer as the model sent it: its chunks, and the counts it reported."""

    chunks: list[str]
    prompt_tokens: int
    completion_tokens: int
    done_reason: str
    model: str

    @property
    def output(self) -> str:
        return "".join(self.chunks)

    def generation(self) -> Generation:
        return Generation(
            output=self.output,
            promptTokens=self.prompt_tokens,
            completionTokens=self.completion_tokens,
            model=self.model,
            doneReason=self.done_reason,
        )

    @classmethod
    def of(cls, generation: Generation, chunks: list[str]) -> CachedAnswer | None:
        """What to keep of a finished answer; None when the model left a count out (a hit
        must know what it stands for)."""
        if generation.promptTokens is None or generation.completionTokens is None:
            return None
        return cls(
            chunks=chunks,
            prompt_tokens=generation.promptTokens,
            completion_tokens=generation.completionTokens,
            done_reason=generation.doneReason,
            model=generation.model,
        )


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """Where one request's answer is kept, and whether to read and write it."""

    key: str
    read: bool
    write: bool


class ResponseCache:
    def __init__(
        self, redis: RedisClient, *, settings: Settings, lookups: Counter, errors: Counter
    ) -> None:
        self._redis = redis
        self._ttl_s = settings.cache_ttl_seconds
        self._all = settings.cache_all_requests
        self._shared = settings.cache_shared
        self._max_entries = settings.cache_max_entries
        self._max_bytes = settings.cache_max_entry_bytes
        self._lookups = lookups
        self._errors = errors
        self.hit_charge = settings.cache_hit_charge
        self._writes: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self._ttl_s > 0

    def entry(self, call: ModelCall, *, user_id: str, cache_control: str) -> CacheEntry | None:
        """The request's entry; None when it is not cached (off, sampled, or `no-store`)."""
        if not self.enabled or not (self._all or _deterministic(call)):
            return None
        directives = {part.strip().lower() for part in cache_control.split(",")}
        if "no-store" in directives:
            return None
        scope = "" if self._shared else user_id
        shape = [
            scope,
            call.model,
            call.messages,
            call.max_tokens,
            call.temperature,
            call.top_p,
            call.seed,
            call.stop,
        ]
        digest = hashlib.sha256(json.dumps(shape, separators=(",", ":")).encode()).hexdigest()
        return CacheEntry(key=_PREFIX + digest, read="no-cache" not in directives, write=True)

    async def get(self, entry: CacheEntry) -> CachedAnswer | None:
        answer = await self._read(entry) if entry.read else None
        self._lookups.labels(CacheResult.HIT if answer else CacheResult.MISS).inc()
        return answer

    async def _read(self, entry: CacheEntry) -> CachedAnswer | None:
        try:
            kept = await self._redis.get(entry.key)
        except RedisError as exc:
            self._unavailable(exc)
            return None
        if kept is None:
            return None
        try:
            return CachedAnswer.model_validate_json(kept)
        except ValidationError:
            _log.warning("response_cache_entry_invalid")
            return None

    def remember(self, entry: CacheEntry, answer: CachedAnswer) -> None:
        """`put` in the background: the answer is not held back for it."""
        task = asyncio.create_task(self.put(entry, answer))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def drain(self) -> None:
        """Wait for the answers still being written (on shutdown)."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def put(self, entry: CacheEntry, answer: CachedAnswer) -> None:
        """Keep the answer (not when it is over the size bound), then drop the oldest entries
        over CACHE_MAX_ENTRIES and the index's expired ones."""
        if not entry.write:
            return
        data = answer.model_dump_json()
        if len(data) > self._max_bytes:
            return
        now = time.time()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(entry.key, data, ex=self._ttl_s)
                pipe.zadd(_INDEX, {entry.key: now})
                pipe.zremrangebyscore(_INDEX, "-inf", now - self._ttl_s)
                pipe.zcard(_INDEX)
                *_, size = await pipe.execute()
            if size > self._max_entries:
                await self._evict(int(size) - self._max_entries)
        except RedisError as exc:
            self._unavailable(exc)

    def _unavailable(self, exc: RedisError) -> None:
        self._errors.inc()
        _log.warning("response_cache_unavailable", error_type=type(exc).__name__)

    async def _evict(self, count: int) -> None:
        # (member, score) pairs; one key at a time: in a Redis Cluster they live in other slots.
        for member in await self._redis.zpopmin(_INDEX, count):
            key = member[0] if isinstance(member, tuple | list) else member
            await self._redis.delete(key)


def _deterministic(call: ModelCall) -> bool:
    return call.temperature == 0 or call.seed is not None
