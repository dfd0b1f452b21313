"""Swagger UI at /docs that needs neither the internet nor inline code.

FastAPI's own page loads Swagger UI from a CDN (blank offline) and starts it with an inline
script (refused by a Content-Security-Policy without 'unsafe-inline'). This page is served with
its own strict CSP (`DOCS_CSP`), and everything it loads comes from this gateway under
`/docs/assets/`: Swagger UI 5's files from the pinned `fastapi-offline` package (MIT; it reads
the OpenAPI 3.1 document FastAPI writes) and the few lines that start it (`swagger-init.js`), which
read the OpenAPI document's URL from the page.
Only the files named below are served: nothing else of the package, no directory listing.
"""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response
from infergate_common.errors import NotFoundError

ASSETS = "/docs/assets"
_PACKAGE, _VENDOR = "fastapi_offline", "static"
_JS = "text/javascript; charset=utf-8"
_FILES = {
    "swagger-ui-bundle.js": _JS,
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
_INIT = "swagger-init.js"
# The web console's policy (nginx/infergate-console.conf): this origin's scripts, styles, fetches
# and images only, and data: images (Swagger UI's stylesheet draws its icons with them). Nothing
# inline runs: Swagger UI sets styles through the DOM, which CSP allows.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
# What FastAPI's page passes to Swagger UI, without its validator badge (an image from
# validator.swagger.io) and with the OpenAPI URL from the page.
_INIT_SCRIPT = """\
// Starts Swagger UI (a file, not an inline script: the page's CSP allows no inline code).
window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""
_CACHED = {"cache-control": "public, max-age=86400", "x-content-type-options": "nosniff"}


def docs_page(*, title: str, openapi_url: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} - Swagger UI</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS}/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{html.escape(openapi_url)}"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{ASSETS}/{_INIT}"></script>
</body>
</html>
"""


def _vendor_dir() -> Path:
    directory = Path(str(resources.files(_PACKAGE) / _VENDOR))
    missing = [name for name in _FILES if not (directory / name).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline lacks {missing} in {directory}")
    return directory


def docs_router(*, title: str, openapi_url: str) -> APIRouter:
    """GET /docs and its assets (left out of the OpenAPI document)."""
    vendor = _vendor_dir()
    page = docs_page(title=title, openapi_url=openapi_url)
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(
            page,
            headers={
                "content-security-policy": DOCS_CSP,
                "x-content-type-options": "nosniff",
                "referrer-policy": "no-referrer",
                "cache-control": "no-cache",
            },
        )

    @router.get(f"{ASSETS}/{{name}}")
    async def swagger_asset(name: str) -> Response:
        if name == _INIT:
            return Response(_INIT_SCRIPT, media_type=_JS, headers=_CACHED)
        media_type = _FILES.get(name)
        if media_type is None:
            raise NotFoundError()
        return FileResponse(vendor / name, media_type=media_type, headers=_CACHED)

    return router
