"""The public API's bodies (the original's field names)."""

from __future__ import annotations

from typing import Annotated, Any

from infergate_common.validation import Email, Plan
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

_TOKENS_PER_MESSAGE = 8  # role markers around each further message in a chat template


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(StrictBody):
    email: Email


class RegisterResponse(BaseModel):
    message: str = "User registered successfully"
    apiKey: str = Field(description="Shown once; store it safely.")
    plan: Plan


class RotatedKey(BaseModel):
    message: str = "API key rotated"
    apiKey: str = Field(description="Shown once; the previous key no longer works.")
    plan: Plan


class IssuedKey(BaseModel):
    message: str = "API key issued"
    userId: str
    apiKey: str = Field(description="Shown once; the user's previous key no longer works.")
    plan: Plan


class KeyRevoked(BaseModel):
    message: str = "API key revoked"


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("prompt is blank")
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "Prompt must not contain NUL characters")
    return value


class ChatRequest(StrictBody):
    prompt: Annotated[
        str,
        Field(min_length=1, description="The user's message to the model."),
        AfterValidator(_not_blank),
    ]
    stream: bool = Field(
        default=False, description="Answer as Server-Sent Events, one per chunk of text."
    )
    model: str | None = Field(
        default=None, max_length=200, description="One of the allowed models (default MODEL)."
    )


class ChatResponse(BaseModel):
    output: str
    tokensUsed: int


class UsageSummary(BaseModel):
    usedTokens: int
    monthlyLimit: int
    remainingTokens: int = Field(
        description="What new chats can still use: the limit minus the tokens used and those "
        "held by your chats in progress (as x-ratelimit-remaining-tokens says)."
    )
    percentageUsed: float


class VerifiedUser(BaseModel):
    valid: bool
    userId: str
    plan: Plan


class AccessGranted(BaseModel):
    message: str = "Access granted"
    user: VerifiedUser


class Generation(BaseModel):
    """What the model produced; a count it did not report is None (ai-service passes it on)."""

    output: str
    promptTokens: int | None
    completionTokens: int | None
    model: str
    doneReason: str
    backend: str | None = None  # the model backend that answered (None: a cached answer)


class ServedModel(BaseModel):
    """One model of the LLM server, as ai-service describes it (GET /ai/models)."""

    name: str
    sameAs: list[str] = []
    family: str | None = None
    parameterSize: str | None = None
    quantization: str | None = None


class MonthlyUsage(BaseModel):
    usedTokens: int
    reservedTokens: int
    monthlyTokenLimit: int
    remainingTokens: int


class ModelCall(BaseModel):
    """What the gateway asks the ai-service for: a conversation and its sampling settings."""

    messages: list[dict[str, str]]
    max_tokens: int
    model: str
    # Chat-template tokens around the prompt (PROMPT_TOKEN_OVERHEAD), part of its upper bound.
    prompt_overhead: int = 0
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None

    def payload(self, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": self.messages,
            "maxTokens": self.max_tokens,
            "model": self.model,
            "stream": stream,
        }
        for name, value in (
            ("temperature", self.temperature),
            ("topP", self.top_p),
            ("seed", self.seed),
            ("stop", self.stop),
        ):
            if value is not None:
                body[name] = value
        return body

    def prompt_bound(self) -> int:
        """An upper bound of the prompt's tokens: no BPE token is shorter than one byte, plus the
        chat template's tokens around each message."""
        framing = self.prompt_overhead + _TOKENS_PER_MESSAGE * (len(self.messages) - 1)
        return sum(len(m["content"].encode("utf-8")) for m in self.messages) + framing

    def worst_case(self) -> int:
        """An upper bound of the whole turn: the prompt's bound and the output cap."""
        return self.prompt_bound() + self.max_tokens
