"""The server's information endpoints and error shapes, through the ollama client and httpx."""

from __future__ import annotations

import re

import httpx
import ollama
import pytest

ALL_NAMES = {"llama3:latest", "tiny:latest", "smollm2:135m"}


async def test_root_answers_ollama_is_running_for_get_and_head(local_llm: str) -> None:
    async with httpx.AsyncClient(base_url=local_llm) as http:
        got = await http.get("/")
        head = await http.head("/")
    assert got.status_code == 200
    assert got.text == "Ollama is running"
    assert got.headers["content-type"].startswith("text/plain")
    assert head.status_code == 200


async def test_version_is_reported_as_json(local_llm: str) -> None:
    async with httpx.AsyncClient(base_url=local_llm) as http:
        response = await http.get("/api/version")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert re.fullmatch(r"\d+\.\d+\.\d+", response.json()["version"])


async def test_list_names_each_alias_and_the_real_model(client: ollama.AsyncClient) -> None:
    listed = await client.list()
    assert {model.model for model in listed.models} == ALL_NAMES
    for model in listed.models:
        assert model.size is not None
        assert model.size > 0
        assert model.digest is not None
        assert re.fullmatch(r"[0-9a-f]{64}", model.digest)
        assert model.modified_at is not None
        assert model.details is not None
        assert model.details.format == "gguf"
        assert model.details.quantization_level == "Q4_1"


@pytest.mark.parametrize("name", ["llama3", "llama3:latest", "tiny", "smollm2:135m"])
async def test_show_resolves_a_name_with_or_without_its_tag(
    client: ollama.AsyncClient, name: str
) -> None:
    shown = await client.show(name)
    assert shown.modelinfo is not None
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["general.parameter_count"] > 0
    assert shown.capabilities == ["completion"]
    assert shown.template
    assert "im_start" in shown.template
    assert shown.parameters is not None
    assert "num_predict" in shown.parameters


async def test_show_of_an_unknown_model_is_404(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        await client.show("no-such-model")
    assert raised.value.status_code == 404
    assert "not found" in raised.value.error


async def test_ps_lists_the_loaded_model(client: ollama.AsyncClient) -> None:
    running = await client.ps()
    assert {model.model for model in running.models} == ALL_NAMES
    assert all(model.expires_at is not None for model in running.models)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", b""),
        ("/api/chat", b"{not json"),
        ("/api/chat", b"[1, 2]"),
        ("/api/chat", b'{"messages": [{"role": "user", "content": "hi"}]}'),
        ("/api/chat", b'{"model": "llama3", "messages": "hi"}'),
        ("/api/generate", b'{"model": "llama3", "prompt": "hi", "options": {"top_k": "x"}}'),
        ("/api/generate", b'{"model": "llama3", "prompt": "hi", "format": "yaml"}'),
        ("/api/generate", b'{"model": "llama3", "prompt": "hi", "raw": true, "system": "s"}'),
        ("/api/chat", b'{"model": "llama3", "messages": [{"role": "user"}], "think": true}'),
        ("/api/show", b"{}"),
    ],
)
async def test_bad_bodies_are_400_with_an_error_field(
    local_llm: str, path: str, body: bytes
) -> None:
    async with httpx.AsyncClient(base_url=local_llm) as http:
        response = await http.post(path, content=body)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert set(response.json()) == {"error"}


async def test_an_unknown_route_is_a_plain_404(local_llm: str) -> None:
    async with httpx.AsyncClient(base_url=local_llm) as http:
        response = await http.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.text == "404 page not found"
