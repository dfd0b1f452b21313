"""A backend of `type = "openai"` (ROUTES_FILE): an OpenAI-compatible server's
/v1/chat/completions and /v1/models behind the ollama client's interface, so the pool, the
retries and the answers treat it as any other backend.

Its answers come back as ollama's types (token counts from `usage`; a stream asks for
`stream_options.include_usage`, and a server that sends none gives unknown counts, which the
gateway bills as the bound it reserved). Its failures are raised as the ollama client's: an HTTP
error status as `ollama.ResponseError` (404: the model is missing there), transport failures as
httpx's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal, overload

import httpx
import ollama
from infergate_common.aiohttp_transport import AiohttpTransport
from pydantic import SecretStr

CONNECT_TIMEOUT = 3.0
# ollama's option names, as OpenAI's chat completions call them.
OPTION_NAMES = {"num_predict": "max_tokens", "temperature": "temperature", "top_p": "top_p"}
OPTION_NAMES |= {"seed": "seed", "stop": "stop"}
Messages = Sequence[Mapping[str, Any]]


class OpenAiClient:
    def __init__(
        self, *, url: str, timeout: float, api_key: SecretStr | None, hooks: list[Any]
    ) -> None:
        headers = {"authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            transport=AiohttpTransport(),
            event_hooks={"request": hooks},
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def list(self) -> ollama.ListResponse:
        response = await self._http.get("/v1/models")
        await _raise_for_status(response)
        names = [entry.get("id") for entry in response.json().get("data", [])]
        return ollama.ListResponse(
            models=[ollama.ListResponse.Model(model=name) for name in names if name]
        )

    @overload
    async def chat(
        self, *, model: str, messages: Messages, options: Mapping[str, Any], stream: Literal[False]
    ) -> ollama.ChatResponse: ...

    @overload
    async def chat(
        self, *, model: str, messages: Messages, options: Mapping[str, Any], stream: Literal[True]
    ) -> AsyncIterator[ollama.ChatResponse]: ...

    async def chat(
        self, *, model: str, messages: Messages, options: Mapping[str, Any], stream: bool
    ) -> ollama.ChatResponse | AsyncIterator[ollama.ChatResponse]:
        body: dict[str, Any] = {"model": model, "messages": list(messages), "stream": stream}
        body.update((OPTION_NAMES[k], v) for k, v in options.items() if k in OPTION_NAMES)
        if stream:
            body["stream_options"] = {"include_usage": True}
            return self._stream(body)
        response = await self._http.post("/v1/chat/completions", json=body)
        await _raise_for_status(response)
        answer = response.json()
        choice = answer["choices"][0]
        return _final(
            model,
            content=choice["message"].get("content") or "",
            finish=choice.get("finish_reason"),
            usage=answer.get("usage"),
        )

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[ollama.ChatResponse]:
        """Chunks as ollama's; the request goes out on the first `anext` (as ollama's does)."""
        finish: str | None = None
        usage: Mapping[str, Any] | None = None
        async with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
            await _raise_for_status(response)
            async for line in response.aiter_lines():
                data = line.removeprefix("data:").strip()
                if not line.startswith("data:") or not data:
                    continue
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    finish = choice.get("finish_reason") or finish
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        yield ollama.ChatResponse(
                            model=body["model"],
                            done=False,
                            message=ollama.Message(role="assistant", content=content),
                        )
        yield _final(body["model"], content="", finish=finish, usage=usage)


def _final(
    model: str, *, content: str, finish: str | None, usage: Mapping[str, Any] | None
) -> ollama.ChatResponse:
    return ollama.ChatResponse(
        model=model,
        done=True,
        done_reason=finish or "stop",
        message=ollama.Message(role="assistant", content=content),
        prompt_eval_count=(usage or {}).get("prompt_tokens"),
        eval_count=(usage or {}).get("completion_tokens"),
    )


async def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    await response.aread()
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    raise ollama.ResponseError(str(message or response.text or "error"), response.status_code)
