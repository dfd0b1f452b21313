"""Which models a request may use: the configured allow-list, as far as the LLM server has them."""

from __future__ import annotations

import time

from infergate_common.errors import AppError, NotFoundError

from api_gateway.clients import AiClient

_CACHE_SECONDS = 10.0


def normalize(name: str) -> str:
    return name.strip().removesuffix(":latest")


class ModelCatalog:
    def __init__(self, allowed: list[str], *, default: str) -> None:
        self.allowed = [normalize(m) for m in allowed] or [normalize(default)]
        self.default = normalize(default)
        self._available: list[str] | None = None
        self._fetched_at = 0.0

    def resolve(self, requested: str | None) -> str:
        """The model to call: the default when none is asked for; 404 when not allowed."""
        if requested is None:
            return self.default
        name = normalize(requested)
        if name not in self.allowed:
            raise NotFoundError(
                f"The model '{requested}' does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return name

    async def available(self, ai: AiClient) -> list[str]:
        """Allowed models the LLM server actually has (briefly cached)."""
        now = time.monotonic()
        if self._available is None or now - self._fetched_at > _CACHE_SECONDS:
            try:
                served = set(await ai.models())
            except AppError:
                if self._available is None:
                    raise
                return self._available  # stale is better than failing a listing
            self._available = [m for m in self.allowed if m in served]
            self._fetched_at = now
        return self._available
