"""Ollama's /api/chat reply bodies, as the ai-service tests' stand-in servers send them."""

from __future__ import annotations

from typing import Any


def chat_body(content: str = "Hello there", **fields: Any) -> dict[str, Any]:
    """A finished (non-streamed) chat reply; `fields` add or replace top-level fields."""
    return {
        "model": "llama3",
        "created_at": "2026-11-29T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        **fields,
    }
