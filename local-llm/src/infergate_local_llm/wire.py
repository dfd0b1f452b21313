"""Ollama's response bodies: field names, RFC 3339 times, nanosecond durations, NDJSON lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from infergate_local_llm.generation import Finished

Kind = Literal["chat", "generate"]


def rfc3339(moment: datetime | None = None) -> str:
    """Go's time.Time JSON form, e.g. 2023-08-04T19:22:45.499127Z."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def ndjson_line(body: dict[str, Any]) -> bytes:
    # One object per line and never an empty line: the ollama client json-parses every line.
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


@dataclass(frozen=True)
class Envelope:
    """How one request's chunks look: `message` for chat, `response` for generate."""

    kind: Kind
    model: str  # echoed exactly as the client asked for it, as Ollama does
    with_context: bool = False

    def chunk(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "created_at": rfc3339()}
        if self.kind == "chat":
            body["message"] = {"role": "assistant", "content": text}
        else:
            body["response"] = text
        body["done"] = False
        return body

    def load(self, *, unload: bool) -> dict[str, Any]:
        """The answer to an empty prompt or message list: the model is (already) loaded."""
        return {**self.chunk(""), "done": True, "done_reason": "unload" if unload else "load"}

    def final(
        self, finished: Finished, *, text: str, total_ns: int, load_ns: int
    ) -> dict[str, Any]:
        """The last object: `text` is empty when streaming, the whole output otherwise."""
        body = {**self.chunk(text), "done": True, "done_reason": finished.done_reason}
        if self.kind == "generate" and self.with_context:
            body["context"] = list(finished.tokens)
        metrics = {
            "total_duration": total_ns,
            "load_duration": load_ns,
            "prompt_eval_count": finished.prompt_eval_count,
            "prompt_eval_duration": finished.prompt_eval_duration_ns,
            "eval_count": finished.eval_count,
            "eval_duration": finished.eval_duration_ns,
        }
        # Ollama's metric fields are `omitempty`: a zero is left out, not sent.
        body.update({name: value for name, value in metrics.items() if value})
        return body
