"""Static pages on the web node: `/portal`, the JS client it imports, vendored code, and
`/ops` (the operators' console: app/static/ops/, over the admin API).

- `/portal/`                   app/static/portal/ (index.html, portal.js, portal.css)
- `/portal/lib/herald-client/` the repository's clients/js/src, read-only, JavaScript only
- `/portal/vendor/`            app/static/vendor/ (socket.io-client's ESM build, pinned)

No build step: the page maps `socket.io-client` and `herald-client` with an import map.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Scope

STATIC = Path(__file__).resolve().parents[1] / "static"
CLIENT_JS = Path(__file__).resolve().parents[2] / "clients" / "js" / "src"


class ModulesOnly(StaticFiles):
    """Only `.js` files: a library directory, without anything else that lies beside it."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not path.endswith(".js"):
            raise HTTPException(404, f"not a module: {path}")
        return await super().get_response(path, scope)


def mount(app: FastAPI) -> None:
    """Mount the portal and the console (more specific paths first: Starlette matches in order)."""
    if CLIENT_JS.is_dir():  # absent from an install without the repository's clients/
        app.mount("/portal/lib/herald-client", ModulesOnly(directory=CLIENT_JS),
                  name="herald-client")
    app.mount("/portal/vendor", StaticFiles(directory=STATIC / "vendor"), name="vendor")
    app.mount("/portal", StaticFiles(directory=STATIC / "portal", html=True), name="portal")
    app.mount("/ops", StaticFiles(directory=STATIC / "ops", html=True), name="ops")
