"""Which backends serve which model: ROUTES_FILE (TOML), else OLLAMA_URLS, else OLLAMA_URL.

The file (example: docs/routes.example.toml) has a `[[models."<model>"]]` list per model and an
optional `[[default]]` list for every other model. Each entry is one backend: `url`, `name`
(default `host:port`), `weight` (1), `priority` (0, lower is preferred: a group is used only when
no backend of a better group is available for the model) and `timeout` (seconds, default
OLLAMA_TIMEOUT). A backend named in several lists is one backend (one connection pool, one
circuit breaker); its url and timeout must agree everywhere. Everything is checked at startup
and a problem is one line naming the file and the entry.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def canonical_model(name: str) -> str:
    """`llama3` and `llama3:latest` are one model (as in Ollama)."""
    return name.removesuffix(":latest")


def backend_name(url: str) -> str:
    """`host:port` of a backend URL (checked: http or https, a host, no credentials)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s)://host[:port] URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a backend URL may not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"{url!r} has an invalid port") from exc
    return f"{parts.hostname}:{port}"


def parse_urls(value: str) -> list[str]:
    """The URLs of a comma-separated list (blank entries ignored), each checked."""
    urls = [url.strip().rstrip("/") for url in value.split(",") if url.strip()]
    names = [backend_name(url) for url in urls]
    if len(set(names)) != len(names):
        raise ValueError("the same backend (host:port) is listed twice")
    return urls


class RouteEntry(BaseModel):
    """One backend in a model's list, as written in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    name: str | None = None
    weight: float = Field(default=1.0, gt=0, le=1000)
    priority: int = Field(default=0, ge=0, le=100)
    timeout: PositiveFloat | None = None
    # "openai": an OpenAI-compatible server (/v1/chat/completions), its key in this variable.
    type: Literal["ollama", "openai"] = "ollama"
    api_key_env: str | None = None

    @model_validator(mode="after")
    def _key_only_for_openai(self) -> RouteEntry:
        if self.api_key_env is not None and self.type != "openai":
            raise ValueError('api_key_env is for type = "openai" backends')
        return self

    def api_key(self) -> SecretStr | None:
        """The key from the variable `api_key_env` names (read with the other settings)."""
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env, "")
        if not value:
            raise ValueError(f"api_key_env {self.api_key_env} is not set")
        return SecretStr(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        backend_name(value)
        return value.rstrip("/")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_PATTERN.match(value):
            raise ValueError("must be 1-64 letters, digits or . _ : - (it is a metric label)")
        return value


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, list[RouteEntry]] = {}
    default: list[RouteEntry] | None = Field(default=None, min_length=1)


@dataclass(frozen=True, slots=True)
class BackendSpec:
    name: str
    url: str
    timeout: float
    kind: Literal["ollama", "openai"] = "ollama"
    api_key: SecretStr | None = None


@dataclass(frozen=True, slots=True)
class RouteTarget:
    backend: str  # a BackendSpec's name
    weight: float
    priority: int


Route = tuple[RouteTarget, ...]


@dataclass(frozen=True)
class RoutingConfig:
    backends: tuple[BackendSpec, ...]
    routes: Mapping[str, Route]  # by canonical model name
    default: Route  # for models not in `routes`; empty: those are not served
    checked_models: tuple[str, ...]  # what /readyz requires a backend for

    @classmethod
    def everywhere(cls, urls: Iterable[str], *, timeout: float, model: str) -> RoutingConfig:
        """Every URL serves every model, all equal (OLLAMA_URL or OLLAMA_URLS)."""
        entries = [RouteEntry(url=url) for url in urls]
        if not entries:
            raise ValueError("no backend URL is configured")
        return _build({}, entries, timeout=timeout, model=model)


def load_routing(path: Path, *, timeout: float, model: str) -> RoutingConfig:
    """Read and check ROUTES_FILE; ValueError("ROUTES_FILE <path>: <problem>") if it is wrong."""
    try:
        with path.open("rb") as file:
            raw = tomllib.load(file)
        parsed = RoutesFile.model_validate(raw)
        if not parsed.models and parsed.default is None:
            raise ValueError('no [[models."<name>"]] list and no [[default]] list')
        return _build(parsed.models, parsed.default, timeout=timeout, model=model)
    except OSError as exc:
        raise ValueError(f"ROUTES_FILE {path}: cannot be read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"ROUTES_FILE {path}: not valid TOML ({exc})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"ROUTES_FILE {path}: {where}: {first['msg']}") from exc
    except ValueError as exc:
        raise ValueError(f"ROUTES_FILE {path}: {exc}") from exc


def _build(
    models: Mapping[str, list[RouteEntry]],
    default: list[RouteEntry] | None,
    *,
    timeout: float,
    model: str,
) -> RoutingConfig:
    backends: dict[str, BackendSpec] = {}
    routes = {
        canonical_model(name): _route(entries, backends, timeout=timeout, where=f"models.{name}")
        for name, entries in models.items()
    }
    if any(not route for route in routes.values()):
        raise ValueError("a model's backend list is empty")
    fallback = _route(default or [], backends, timeout=timeout, where="default")
    if canonical_model(model) not in routes and not fallback:
        raise ValueError(f"MODEL {model!r} has no route (list it, or add a [[default]] list)")
    checked = dict.fromkeys([*routes, canonical_model(model)])
    return RoutingConfig(tuple(backends.values()), routes, fallback, tuple(checked))


def _route(
    entries: list[RouteEntry], backends: dict[str, BackendSpec], *, timeout: float, where: str
) -> Route:
    targets: list[RouteTarget] = []
    for entry in entries:
        if entry.timeout is not None and entry.timeout > timeout:
            raise ValueError(f"{where}: timeout {entry.timeout:g} s is above OLLAMA_TIMEOUT")
        spec = BackendSpec(
            name=entry.name or backend_name(entry.url),
            url=entry.url,
            timeout=entry.timeout or timeout,
            kind=entry.type,
            api_key=entry.api_key(),
        )
        known = backends.setdefault(spec.name, spec)
        if known != spec:
            raise ValueError(f"{where}: backend {spec.name!r} is declared twice, differently")
        if any(target.backend == spec.name for target in targets):
            raise ValueError(f"{where}: backend {spec.name!r} is listed twice")
        targets.append(RouteTarget(backend=spec.name, weight=entry.weight, priority=entry.priority))
    return tuple(sorted(targets, key=lambda target: target.priority))
