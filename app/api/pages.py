"""Static pages on the web node: `/portal`, the JS client it imports, vendored code, and
`/ops` (the operators' console: app/static/ops/, over the admin API).

- `/portal/`                   app/static/portal/ (index.html, portal.js, portal.css)
- `/portal/lib/herald-client/` the JS client (clients/js/src; an installed wheel carries a
                               copy made at build time), read-only, JavaScript only
- `/portal/vendor/`            app/static/vendor/ (socket.io-client's ESM build and Swagger
                               UI, pinned)
- `/docs`                      Swagger UI over /openapi.json, from the vendored files (works
                               offline: nothing from a CDN)

No build step: the page maps `socket.io-client` and `@herald-notify/client` with an import map.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Scope

from app.core import bundle

STATIC = Path(__file__).resolve().parents[1] / "static"
SWAGGER_UI = "/portal/vendor/swagger-ui-5.36.0"  # swagger-ui-dist from npm, as published


class ModulesOnly(StaticFiles):
    """Only `.js` files: a library directory, without anything else that lies beside it."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not path.endswith(".js"):
            raise HTTPException(404, f"not a module: {path}")
        return await super().get_response(path, scope)


def mount(app: FastAPI) -> None:
    """Mount the portal and the console (more specific paths first: Starlette matches in
    order) and /docs (the app is built with docs_url=None: FastAPI's own page loads Swagger
    UI from a CDN)."""

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json",
                                   title=f"{app.title} API", swagger_js_url=f"{SWAGGER_UI}/"
                                   "swagger-ui-bundle.js",
                                   swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
                                   swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png")

    client_js = bundle.client_js()
    if client_js is not None:
        app.mount("/portal/lib/herald-client", ModulesOnly(directory=client_js),
                  name="herald-client")
    app.mount("/portal/vendor", StaticFiles(directory=STATIC / "vendor"), name="vendor")
    app.mount("/portal", StaticFiles(directory=STATIC / "portal", html=True), name="portal")
    app.mount("/ops", StaticFiles(directory=STATIC / "ops", html=True), name="ops")
