"""Reading the backends' configuration: ROUTES_FILE, OLLAMA_URLS, OLLAMA_URL, and the one-line
startup error for each mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ai_service.config import Settings
from ai_service.routing_config import RouteTarget
from infergate_common.runner import invalid_settings
from pydantic import SecretStr, ValidationError

TOKEN = SecretStr("unit-test-internal-token-0123456789")
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "routes.example.toml"


def settings(**values: Any) -> Settings:
    return Settings(internal_token=TOKEN, **values)


def startup_error(**values: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        settings(**values)
    (line,) = invalid_settings(raised.value)
    return line


def routes(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(text)
    return path


def test_one_ollama_url_serves_every_model() -> None:
    routing = settings(ollama_url="http://gpu:11434").routing
    assert [(b.name, b.url, b.timeout) for b in routing.backends] == [
        ("gpu:11434", "http://gpu:11434", 120.0)
    ]
    assert routing.routes == {}
    assert routing.default == (RouteTarget(backend="gpu:11434", weight=1.0, priority=0),)
    assert routing.checked_models == ("llama3",)


def test_ollama_urls_win_over_ollama_url() -> None:
    routing = settings(ollama_urls="http://a:1, http://b:2/", ollama_url="http://c:3").routing
    assert [(b.name, b.url) for b in routing.backends] == [
        ("a:1", "http://a:1"),
        ("b:2", "http://b:2"),
    ]


def test_empty_variables_as_compose_passes_them_mean_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROUTES_FILE", "")
    monkeypatch.setenv("OLLAMA_URLS", "")
    routing = settings(ollama_url="http://gpu:11434").routing
    assert [b.url for b in routing.backends] == ["http://gpu:11434"]


def test_the_routes_file_wins_and_reads_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTED_LLM_API_KEY", "sk-hosted-0123")
    routing = settings(routes_file=EXAMPLE, ollama_urls="http://a:1", ollama_timeout=90).routing
    assert [(b.name, b.timeout, b.kind) for b in routing.backends] == [
        ("gpu-a", 90.0, "ollama"),
        ("gpu-b", 90.0, "ollama"),
        ("cpu-spare", 60.0, "ollama"),
        ("hosted", 90.0, "openai"),
    ]
    hosted = routing.backends[-1]
    assert hosted.api_key is not None
    assert hosted.api_key.get_secret_value() == "sk-hosted-0123"
    assert "sk-hosted" not in repr(routing)
    assert routing.routes["llama3"] == (
        RouteTarget(backend="gpu-a", weight=2.0, priority=0),
        RouteTarget(backend="gpu-b", weight=1.0, priority=0),
        RouteTarget(backend="cpu-spare", weight=1.0, priority=1),
        RouteTarget(backend="hosted", weight=1.0, priority=2),
    )
    assert set(routing.routes) == {"llama3", "qwen2.5:7b"}
    assert routing.default == (RouteTarget(backend="gpu-a", weight=1.0, priority=0),)
    assert routing.checked_models == ("llama3", "qwen2.5:7b")


def test_model_names_with_and_without_latest_are_one_route(tmp_path: Path) -> None:
    path = routes(tmp_path, '[[models."mistral:latest"]]\nurl = "http://a:1"\n')
    routing = settings(routes_file=path, model="mistral").routing
    assert list(routing.routes) == ["mistral"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[models.llama3]]\nurl = 'http://a:1'\nweight = 0\n", "models.llama3.0.weight"),
        ("[[models.llama3]]\nurl = 'http://a:1'\npriority = -1\n", "models.llama3.0.priority"),
        ("[[models.llama3]]\nurl = 'http://a:1'\ntimeout = 0\n", "models.llama3.0.timeout"),
        ("[[models.llama3]]\nurl = 'http://a:1'\ntimeout = 121\n", "121 s is above OLLAMA_TIMEOUT"),
        ("[[models.llama3]]\nurl = 'http://a:1'\ntype = 'grpc'\n", "models.llama3.0.type"),
        ("[[models.llama3]]\nurl = 'http://a:1'\napi_key_env = 'K'\n", 'for type = "openai"'),
        ("[[models.llama3]]\nurl = 'ftp://a'\n", "is not an http(s)://host[:port] URL"),
        ("[[models.llama3]]\nurl = 'http://u:p@a:1'\n", "may not carry credentials"),
        ("[[models.llama3]]\nurl = 'http://a:1'\nname = 'a b'\n", "metric label"),
        ("[[models.llama3]]\nurl = 'http://a:1'\n[[models.llama3]]\nurl = 'http://a:1'\n", "twice"),
        (
            "[[models.llama3]]\nurl = 'http://a:1'\nname = 'x'\n"
            "[[default]]\nurl = 'http://b:1'\nname = 'x'\n",
            "declared twice, differently",
        ),
        ("[[models.other]]\nurl = 'http://a:1'\n", "MODEL 'llama3' has no route"),
        ("models = {}\n", "no [[models"),
        ("[backends]\n", "backends: Extra inputs are not permitted"),
        ("[[models.llama3]\n", "not valid TOML"),
    ],
)
def test_a_wrong_routes_file_stops_startup_with_one_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = routes(tmp_path, text)
    line = startup_error(routes_file=path)
    assert line.startswith(f"ROUTES_FILE {path}: "), line
    assert problem in line


def test_a_missing_routes_file_is_named() -> None:
    line = startup_error(routes_file=Path("/nonexistent/routes.toml"))
    assert line.startswith("ROUTES_FILE /nonexistent/routes.toml: cannot be read")


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"ollama_urls": "http://a:1,not a url"}, "OLLAMA_URLS: 'not a url' is not an http"),
        ({"ollama_urls": "http://a:1,http://a:1/"}, "OLLAMA_URLS: the same backend"),
        ({"ollama_url": ""}, "OLLAMA_URL: an http(s)://host[:port] URL is required"),
        ({"ollama_url": "http://a:99999"}, "OLLAMA_URL: 'http://a:99999' has an invalid port"),
    ],
)
def test_wrong_urls_stop_startup_with_one_line(values: dict[str, Any], problem: str) -> None:
    assert startup_error(**values).startswith(problem)
