"""Validated request bodies turned into GenerationSpecs, refusing what the model cannot do.

Not supported, and why: `template` on /api/generate (a Go template; the GGUF's Jinja template is
always used, so it is ignored), tools and thinking (SmolLM2's template has neither: 400, as
Ollama answers for such models), `suffix` (no fill-in-the-middle: 400).
"""

from __future__ import annotations

from typing import Any

from infergate_local_llm.boundary import OllamaError, model_not_found
from infergate_local_llm.catalog import ModelCatalog
from infergate_local_llm.generation import GenerationSpec, Sampling
from infergate_local_llm.schemas import ChatRequest, FormatSpec, GenerateRequest, Options


def resolve_model(catalog: ModelCatalog, requested: str) -> str:
    """The name to echo back (as asked for); 400 when missing, 404 when unknown."""
    if not requested.strip():
        raise OllamaError(400, "model is required")
    if catalog.resolve(requested) is None:
        raise model_not_found(requested)
    return requested


def sampling_from(options: Options, *, max_tokens: int) -> Sampling:
    """Ollama's options over Ollama's defaults; the output is never longer than `max_tokens`."""
    wanted = options.num_predict
    # Ollama reads a negative num_predict as "no limit"; this server always has one.
    limit = max_tokens if wanted is None or wanted <= 0 else min(wanted, max_tokens)
    explicit = options.model_dump(exclude_none=True, exclude={"num_predict", "stop"})
    return Sampling(max_tokens=limit, stop=tuple(options.stop or ()), **explicit)


def json_format(value: FormatSpec) -> str | dict[str, Any] | None:
    if value is None or value == "":
        return None
    if value == "json" or isinstance(value, dict):
        return value
    raise OllamaError(400, f'invalid format: {value!r}: expected "json" or a JSON schema')


def _refuse_unsupported(model: str, *, think: bool | str | None, tools: bool) -> None:
    # SmolLM2's template renders neither tools nor thinking; Ollama answers 400 for such models.
    if think not in (None, False):
        raise OllamaError(400, f'"{model}" does not support thinking')
    if tools:
        raise OllamaError(400, f'"{model}" does not support tools')


def chat_spec(body: ChatRequest, *, model: str, max_tokens: int) -> GenerationSpec:
    _refuse_unsupported(model, think=body.think, tools=bool(body.tools))
    return GenerationSpec(
        sampling=sampling_from(body.options, max_tokens=max_tokens),
        messages=tuple({"role": m.role, "content": m.content} for m in body.messages),
        json_format=json_format(body.format),
    )


def generate_spec(body: GenerateRequest, *, model: str, max_tokens: int) -> GenerationSpec:
    _refuse_unsupported(model, think=body.think, tools=False)
    if body.suffix:
        raise OllamaError(400, f'"{model}" does not support insert')
    sampling = sampling_from(body.options, max_tokens=max_tokens)
    fmt = json_format(body.format)
    if body.raw:
        if body.template or body.system or body.context:
            raise OllamaError(400, "raw mode does not support template, system, or context")
        return GenerationSpec(sampling=sampling, text=body.prompt, json_format=fmt)
    messages = ({"role": "system", "content": body.system},) if body.system else ()
    return GenerationSpec(
        sampling=sampling,
        messages=(*messages, {"role": "user", "content": body.prompt}),
        context=tuple(body.context or ()),
        json_format=fmt,
    )
