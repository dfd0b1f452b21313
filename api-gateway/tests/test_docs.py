"""/docs: Swagger UI served by the gateway itself (no CDN), under a strict Content-Security-Policy
(no inline script), Swagger UI 5 reading the gateway's own OpenAPI 3.1 document."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from importlib import resources
from pathlib import Path

import httpx
import pytest
from api_gateway.docs import DOCS_CSP

Opener = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
VENDOR = Path(str(resources.files("fastapi_offline"))) / "static"


@pytest.fixture
async def gateway(open_gateway: Opener) -> AsyncIterator[httpx.AsyncClient]:
    async with open_gateway() as client:
        yield client


def loaded_urls(page: str) -> list[str]:
    """Every URL the page loads: scripts, stylesheets, icons."""
    return re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', page)


async def test_docs_loads_everything_from_this_gateway_and_runs_no_inline_script(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == DOCS_CSP
    assert "unsafe-inline" not in DOCS_CSP
    page = response.text
    urls = loaded_urls(page)
    assert {url.rsplit("/", 1)[-1] for url in urls} >= {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-init.js",
    }
    assert all(url.startswith("/docs/assets/") for url in urls), urls
    # Every <script> has a src and no body: nothing inline for the CSP to refuse.
    assert re.findall(r"<script[^>]*>([^<]*)</script>", page) == ["", ""]
    assert "cdn" not in page.lower()
    assert "http" not in page.lower()


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("favicon.png", "image/png"),
    ],
)
async def test_swagger_uis_files_come_from_the_pinned_package(
    gateway: httpx.AsyncClient, name: str, content_type: str
) -> None:
    response = await gateway.get(f"/docs/assets/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (VENDOR / name).read_bytes()


async def test_the_initializer_reads_the_openapi_url_from_the_page(
    gateway: httpx.AsyncClient,
) -> None:
    page = (await gateway.get("/docs")).text
    openapi_url = re.search(r'data-openapi-url="([^"]+)"', page)
    assert openapi_url is not None
    script = await gateway.get("/docs/assets/swagger-init.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle(" in script.text
    assert "dataset.openapiUrl" in script.text
    assert openapi_url[1] == "/openapi.json"
    document = await gateway.get(openapi_url[1])
    assert document.status_code == 200
    assert document.json()["openapi"].startswith("3.1")  # read natively by Swagger UI 5


@pytest.mark.parametrize(
    "name",
    ["index.html", "redoc.standalone.js", "..%2F__init__.py", "core.py", ""],
)
async def test_only_the_named_files_are_served(gateway: httpx.AsyncClient, name: str) -> None:
    response = await gateway.get(f"/docs/assets/{name}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_the_gateway_document_stays_openapi_31(gateway: httpx.AsyncClient) -> None:
    assert (await gateway.get("/openapi.json")).json()["openapi"].startswith("3.1")
