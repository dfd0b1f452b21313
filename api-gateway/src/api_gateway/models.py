"""Which models a request may use: the configured allow-list, as far as the LLM server has them."""

from __future__ import annotations

import time

from infergate_common.errors import AppError, NotFoundError

from api_gateway.clients import AiClient
from api_gateway.schemas import ServedModel

_CACHE_SECONDS = 10.0


def normalize(name: str) -> str:
    return name.strip().removesuffix(":latest")


class ModelCatalog:
    def __init__(self, allowed: list[str], *, default: str) -> None:
        self.allowed = [normalize(m) for m in allowed] or [normalize(default)]
        self.default = normalize(default)
        self._available: list[ServedModel] | None = None
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

    async def available(self, ai: AiClient) -> list[ServedModel]:
        """Allowed models the LLM server actually has, with its description of each (briefly
        cached)."""
        now = time.monotonic()
        if self._available is None or now - self._fetched_at > _CACHE_SECONDS:
            try:
                served = {model.name: model for model in await ai.models()}
            except AppError:
                if self._available is None:
                    raise
                return self._available  # stale is better than failing a listing
            self._available = [served[m] for m in self.allowed if m in served]
            self._fetched_at = now
        return self._available

    def root(self, model: ServedModel) -> str | None:
        """The model an allowed name stands for when it is another name of the same file (the
        embedded SmolLM2 answering as `llama3`): the first such name that is not itself allowed."""
        others = [name for name in model.sameAs if name not in self.allowed] or model.sameAs
        return others[0] if others else None
