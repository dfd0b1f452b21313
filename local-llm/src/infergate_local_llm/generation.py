"""What a generation is asked to do, and what it reports back to the waiting request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DoneReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Sampling:
    """Sampler settings, with Ollama's defaults (min_p 0 where llama-cpp-python has 0.05)."""

    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.9
    top_k: int = 40
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    num_ctx: int | None = None


@dataclass(frozen=True)
class GenerationSpec:
    """One request: chat `messages` go through the GGUF's chat template, `text` is used as is."""

    sampling: Sampling
    messages: tuple[dict[str, str], ...] | None = None
    text: str = ""
    # Token ids from an earlier /api/generate response (Ollama's deprecated `context`).
    context: tuple[int, ...] = ()
    # "json", a JSON schema, or None: constrains the output with a llama.cpp grammar.
    json_format: str | dict[str, Any] | None = None


@dataclass(frozen=True)
class TextPiece:
    text: str


@dataclass(frozen=True)
class Finished:
    done_reason: DoneReason
    prompt_eval_count: int
    eval_count: int
    prompt_eval_duration_ns: int
    eval_duration_ns: int
    # The prompt and output token ids (for /api/generate's `context`).
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Failed:
    status: int
    message: str


Event = TextPiece | Finished | Failed


class InvalidRequest(ValueError):
    """The request cannot be served as asked (answered 400, like Ollama)."""


class GenerationCancelled(Exception):
    """The client went away; raised between two tokens."""

    def __init__(self, eval_count: int) -> None:
        super().__init__(f"cancelled after {eval_count} tokens")
        self.eval_count = eval_count
