"""Static pages on the web node: `/portal`, the JS client it imports, and vendored code.

- `/portal/`                   app/static/portal/ (index.html, portal.js, portal.css)
- `/portal/lib/herald-client/` the JS client (clients/js/src; an installed wheel carries a
                               copy made at build time), read-only, JavaScript only
- `/portal/vendor/`            app/static/vendor/ (socket.io-client's ESM build, pinned)

No build step: the page maps `socket.io-client` and `@herald-notify/client` with an import map.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Scope

from app.core import bundle

STATIC = Path(__file__).resolve().parents[1] / "static"


class ModulesOnly(StaticFiles):
    """Only `.js` files: a library directory, without anything else that lies beside it."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not path.endswith(".js"):
            raise HTTPException(404, f"not a module: {path}")
        return await super().get_response(path, scope)


def mount(app: FastAPI) -> None:
    """Mount the portal (more specific paths first: Starlette matches in order)."""
    client_js = bundle.client_js()
    if client_js is not None:
        app.mount("/portal/lib/herald-client", ModulesOnly(directory=client_js),
                  name="herald-client")
    app.mount("/portal/vendor", StaticFiles(directory=STATIC / "vendor"), name="vendor")
    app.mount("/portal", StaticFiles(directory=STATIC / "portal", html=True), name="portal")
