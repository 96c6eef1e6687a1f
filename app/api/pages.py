"""Static pages on the web node: `/portal`, the JS client it imports, vendored code, and
`/ops` (the operators' console: app/static/ops/, over the admin API).

- `/portal/`                   app/static/portal/ (index.html, portal.js, portal.css)
- `/portal/lib/herald-client/` the JS client (clients/js/src; an installed wheel carries a
                               copy made at build time), read-only, JavaScript only
- `/portal/vendor/`            app/static/vendor/ (socket.io-client's ESM build and Swagger
                               UI, pinned)
- `/docs`                      Swagger UI over /openapi.json, from the vendored files (works
                               offline: nothing from a CDN)

No build step: the page maps `@herald-notify/client` and the client's `#socket.io-client` (its
package.json "imports"; in Node a bundled build) with an import map.

Every response under /portal (and /ops, with its own page's policy) carries security
headers (`HEADERS`): a Content-Security-Policy allowing only this origin's scripts, styles
and connections (the portal's one inline script, its import map, by its hash, computed
from index.html at start), no framing, no sniffing, no referrer. `/portal` redirects to
`/portal/` with a relative Location (Starlette's own redirect would build an absolute URL
from the request's Host header).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.types import Scope

from app.core import bundle

STATIC = Path(__file__).resolve().parents[1] / "static"
SWAGGER_UI = "/portal/vendor/swagger-ui-5.36.0"  # swagger-ui-dist from npm, as published


_INLINE_SCRIPT = re.compile(r"<script[^>]*>(.*?)</script>", re.DOTALL)


def inline_script_hashes(html: str) -> list[str]:
    """CSP sources for the inline scripts of `html`: `'sha256-...'` each."""
    return [f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
            for body in _INLINE_SCRIPT.findall(html) if body.strip()]


def security_headers(html: str) -> dict[str, str]:
    scripts = " ".join(["'self'", *inline_script_hashes(html)])
    policy = (f"default-src 'self'; script-src {scripts}; style-src 'self'; "
              "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
              "form-action 'self'; frame-ancestors 'none'")
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


HEADERS = security_headers((STATIC / "portal" / "index.html").read_text(encoding="utf-8"))
OPS_HEADERS = security_headers((STATIC / "ops" / "index.html").read_text(encoding="utf-8"))


class SecureStatic(StaticFiles):
    """Static files with security headers (the portal's unless told otherwise)."""

    def __init__(self, *, headers: dict[str, str] = HEADERS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.security_headers = headers

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(self.security_headers)
        return response


class ModulesOnly(SecureStatic):
    """Only `.js` files: a library directory, without anything else that lies beside it."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not path.endswith(".js"):
            raise HTTPException(404, f"not a module: {path}")
        return await super().get_response(path, scope)


async def portal_redirect() -> Response:
    return RedirectResponse("/portal/", headers=HEADERS)


def mount(app: FastAPI) -> None:
    """Mount the portal and the console (more specific paths first: Starlette matches in
    order) and /docs (the app is built with docs_url=None: FastAPI's own page loads Swagger
    UI from a CDN)."""
    app.add_api_route("/portal", portal_redirect, include_in_schema=False)

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
    app.mount("/portal/vendor", SecureStatic(directory=STATIC / "vendor"), name="vendor")
    app.mount("/portal", SecureStatic(directory=STATIC / "portal", html=True), name="portal")
    app.mount("/ops", SecureStatic(directory=STATIC / "ops", html=True, headers=OPS_HEADERS),
              name="ops")
