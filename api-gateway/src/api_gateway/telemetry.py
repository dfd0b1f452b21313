"""The gateway's metrics and tracer, made once per app (`GatewayTelemetry.create`) and handed to
what records them; they live in `Resources` with the other long-lived objects.

Names follow the OpenTelemetry GenAI semantic conventions in their Prometheus form (`gen_ai_*`,
recorded once per chat, from what was billed), InferGate's own are prefixed `infergate_`. Every
label is bounded: models come from the allow-list, the rest are fixed words. Never a user id,
key, email, request id or prompt. Series that alerts watch are created at zero up front, so an
expression over them has data before the first event.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType

from infergate_common.billing import Settlement
from infergate_common.errors import AppError
from infergate_common.metrics import InternalCallMetrics, counter, gauge, histogram
from infergate_common.tracing import tracing_enabled
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from api_gateway.schemas import Generation, ModelCall

PROVIDER = "ollama"  # gen_ai.provider.name: ai-service speaks Ollama's API
CHAT = "chat"  # gen_ai.operation.name

# The conventions' advisory bucket boundaries.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96)
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1,
    2.5,
    5,
    7.5,
    10,
)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5)
# The gateway's own share of a request: fine steps in the milliseconds.
OVERHEAD_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
)

RATE_LIMITERS = ("user", "registration", "auth_failures")
DECISIONS = ("allowed", "limited", "failed_open", "failed_closed")
RESERVATION_OUTCOMES = ("granted", "refused", "failed", "charged", "released", "charged_in_full")
REDIS_OPERATIONS = ("rate_limit", "key_versions", "settlement_outbox", "response_cache")
CIRCUIT_STATES = ("closed", "open", "half_open")
SETTLEMENT_PATHS = ("outbox", "direct", "kept", "recovered")
GENAI_LABELS = ["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_provider_name"]


@dataclass(frozen=True)
class GatewayMetrics:
    token_usage: Histogram
    operation_duration: Histogram
    time_to_first_token: Histogram
    time_per_output_token: Histogram
    overhead: Histogram
    rate_limit_decisions: Counter
    reservations: Counter
    quota_tokens: Counter
    circuit_state: Gauge
    key_cache: Counter
    redis_errors: Counter
    settlements: Counter
    response_cache: Counter
    internal_calls: InternalCallMetrics

    @classmethod
    def create(cls, registry: CollectorRegistry, *, models: list[str]) -> GatewayMetrics:
        metrics = cls(
            token_usage=histogram(
                "gen_ai_client_token_usage",
                "Tokens billed per chat, by type (input: the prompt, output: the answer).",
                ["gen_ai_token_type", *GENAI_LABELS],
                buckets=TOKEN_BUCKETS,
                registry=registry,
            ),
            operation_duration=histogram(
                "gen_ai_client_operation_duration_seconds",
                "The model call as the gateway saw it (to the end of the answer); error_type is "
                "empty for a success.",
                [*GENAI_LABELS, "error_type"],
                buckets=DURATION_BUCKETS,
                registry=registry,
            ),
            time_to_first_token=histogram(
                "gen_ai_server_time_to_first_token_seconds",
                "Streams: from the model call to its first output chunk.",
                GENAI_LABELS,
                buckets=TTFT_BUCKETS,
                registry=registry,
            ),
            time_per_output_token=histogram(
                "gen_ai_server_time_per_output_token_seconds",
                "Streams: time per output token after the first.",
                GENAI_LABELS,
                buckets=TPOT_BUCKETS,
                registry=registry,
            ),
            overhead=histogram(
                "infergate_gateway_overhead_seconds",
                "What the gateway adds to a chat: the request's time minus the model call's "
                "(also sent as x-infergate-overhead-ms on plain answers).",
                ["mode"],
                buckets=OVERHEAD_BUCKETS,
                registry=registry,
            ),
            rate_limit_decisions=counter(
                "infergate_rate_limit_decisions_total",
                "Rate-limit decisions by limiter (user, registration, auth_failures).",
                ["limiter", "decision"],
                registry=registry,
            ),
            reservations=counter(
                "infergate_quota_reservations_total",
                "Quota reservations by outcome: granted, refused (quota), failed (usage-service), "
                "then settled as charged, released (nothing charged) or charged_in_full.",
                ["outcome"],
                registry=registry,
            ),
            quota_tokens=counter(
                "infergate_quota_tokens_total",
                "Tokens reserved for chats and tokens charged when they were settled.",
                ["kind"],
                registry=registry,
            ),
            circuit_state=gauge(
                "infergate_circuit_breaker_state",
                "1 for the state each model's circuit breaker is in, 0 for the others.",
                ["model", "state"],
                registry=registry,
            ),
            key_cache=counter(
                "infergate_key_cache_lookups_total",
                "API keys found verified in this replica's cache (hit) or verified by "
                "auth-service (miss).",
                ["result"],
                registry=registry,
            ),
            redis_errors=counter(
                "infergate_redis_errors_total",
                "Redis calls that failed, by what they were for.",
                ["operation"],
                registry=registry,
            ),
            settlements=counter(
                "infergate_settlements_total",
                "Settlements by path: outbox (recorded in Redis), direct (Redis was away), "
                "kept (in process until usage-service is back), recovered (claimed from the "
                "outbox after a failed or lost delivery).",
                ["path"],
                registry=registry,
            ),
            response_cache=counter(
                "infergate_response_cache_lookups_total",
                "Response cache lookups of cacheable chats: hit (answered without the model) or "
                "miss (Cache-Control: no-cache included).",
                ["result"],
                registry=registry,
            ),
            internal_calls=InternalCallMetrics.create(registry),
        )
        metrics._start_at_zero(models)
        return metrics

    def _start_at_zero(self, models: list[str]) -> None:
        for limiter in RATE_LIMITERS:
            for decision in DECISIONS:
                self.rate_limit_decisions.labels(limiter, decision)
        for outcome in RESERVATION_OUTCOMES:
            self.reservations.labels(outcome)
        for kind in ("reserved", "charged"):
            self.quota_tokens.labels(kind)
        for result in ("hit", "miss"):
            self.key_cache.labels(result)
            self.response_cache.labels(result)
        for operation in REDIS_OPERATIONS:
            self.redis_errors.labels(operation)
        for path in SETTLEMENT_PATHS:
            self.settlements.labels(path)
        for model in models:
            self.set_circuit_state(model, "closed")

    def set_circuit_state(self, model: str, state: str) -> None:
        for each in CIRCUIT_STATES:
            self.circuit_state.labels(model, each).set(1 if each == state else 0)

    def record_billed(self, settlement: Settlement) -> None:
        """The tokens a chat was billed, once per chat: input is the prompt's share of the
        charge, output the rest (so the two add up to the `tokensUsed` the client received)."""
        charged = settlement.charged_tokens
        if charged <= 0:
            return
        model = settlement.model or ""
        prompt = min(settlement.prompt_tokens, charged)
        self.token_usage.labels("input", CHAT, model, PROVIDER).observe(prompt)
        self.token_usage.labels("output", CHAT, model, PROVIDER).observe(charged - prompt)
        self.quota_tokens.labels("charged").inc(charged)

    def record_settled(self, settlement: Settlement, *, in_full: bool) -> None:
        if in_full:
            outcome = "charged_in_full"
        else:
            outcome = "charged" if settlement.charged_tokens > 0 else "released"
        self.reservations.labels(outcome).inc()


@dataclass
class ModelTime:
    """How long a request waited on the model (kept in the request's scope for the overhead)."""

    seconds: float | None = None
    streamed: bool = False


@dataclass(frozen=True)
class GatewayTelemetry:
    metrics: GatewayMetrics
    tracer: trace.Tracer
    tracing: bool  # spans are exported (OTEL_EXPORTER_OTLP_ENDPOINT is set)

    @classmethod
    def create(cls, registry: CollectorRegistry, *, models: list[str]) -> GatewayTelemetry:
        return cls(
            metrics=GatewayMetrics.create(registry, models=models),
            tracer=trace.get_tracer("infergate.api_gateway"),
            tracing=tracing_enabled(),
        )

    def model_call(
        self, call: ModelCall, model_time: ModelTime, *, streamed: bool = False
    ) -> ObservedCall:
        return ObservedCall(self, call, model_time, streamed=streamed)


class ObservedCall:
    """One model call, measured (GenAI duration; for streams time to first token and per output
    token) and, when tracing, its `chat {model}` client span with the GenAI attributes (the
    model, its token counts and finish reason; never the prompt or the output).

    A plain call is used as a context manager around the call (its span is current, so the call
    to ai-service nests under it); a stream calls `first_output` and `ended`."""

    def __init__(
        self, telemetry: GatewayTelemetry, call: ModelCall, model_time: ModelTime, *, streamed: bool
    ) -> None:
        self._metrics = telemetry.metrics
        self._labels = (CHAT, call.model, PROVIDER)
        self._model_time = model_time
        self._started = time.perf_counter()
        self._first: float | None = None
        self._span: trace.Span | None = None
        self._current: AbstractContextManager[trace.Span] | None = None
        model_time.streamed = streamed
        # Only inside a request whose span records (the parent-based sampler would drop this
        # span anyway): an unsampled chat builds no attributes and makes no span.
        if telemetry.tracing and trace.get_current_span().is_recording():
            attributes: dict[str, str | int | float] = {
                "gen_ai.operation.name": CHAT,
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.request.model": call.model,
                "gen_ai.request.max_tokens": call.max_tokens,
            }
            for name, value in (
                ("temperature", call.temperature),
                ("top_p", call.top_p),
                ("seed", call.seed),
            ):
                if value is not None:
                    attributes[f"gen_ai.request.{name}"] = value
            name = f"{CHAT} {call.model}"
            if streamed:
                attributes["gen_ai.request.stream"] = True
                self._span = telemetry.tracer.start_span(
                    name, kind=SpanKind.CLIENT, attributes=attributes
                )
            else:
                self._current = telemetry.tracer.start_as_current_span(
                    name, kind=SpanKind.CLIENT, attributes=attributes
                )

    def __enter__(self) -> ObservedCall:
        if self._current is not None:
            self._span = self._current.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done(error)
        if self._current is not None:
            self._current.__exit__(kind, error, traceback)

    def answered(self, generation: Generation) -> None:
        self._describe(generation, generation.completionTokens)

    def first_output(self) -> None:
        self._first = time.perf_counter()
        self._metrics.time_to_first_token.labels(*self._labels).observe(self._first - self._started)

    def ended(self, ending: Generation | AppError | None, chunks: int) -> None:
        """A stream's end: its answer, its error, or None when the caller went away."""
        ended = time.perf_counter()
        if isinstance(ending, Generation):
            output = ending.completionTokens if ending.completionTokens is not None else chunks
            if self._first is not None and output > 1:
                per_token = (ended - self._first) / (output - 1)
                self._metrics.time_per_output_token.labels(*self._labels).observe(per_token)
            self._describe(ending, output)
        self._done(ending if isinstance(ending, AppError) else None, cut=ending is None)
        if self._span is not None:
            if isinstance(ending, AppError):
                self._span.set_status(Status(StatusCode.ERROR, ending.error_code))
            self._span.end()

    def _describe(self, generation: Generation, output: int | None) -> None:
        if self._span is None:
            return
        self._span.set_attribute("gen_ai.response.model", generation.model)
        self._span.set_attribute("gen_ai.response.finish_reasons", [generation.doneReason])
        if generation.promptTokens is not None:
            self._span.set_attribute("gen_ai.usage.input_tokens", generation.promptTokens)
        if output is not None:
            self._span.set_attribute("gen_ai.usage.output_tokens", output)

    def _done(self, error: BaseException | None, *, cut: bool = False) -> None:
        seconds = time.perf_counter() - self._started
        self._model_time.seconds = seconds
        if isinstance(error, AppError):
            error_type = error.error_code
        elif error is not None or cut:
            error_type = "cancelled"
        else:
            error_type = ""
        self._metrics.operation_duration.labels(*self._labels, error_type).observe(seconds)
        if error_type and self._span is not None:
            self._span.set_attribute("error.type", error_type)
