"""`python -m app.web`: the web node (uvicorn serving `app.main:app`), as the
Procfile runs it, with the web-server options that are Herald settings.

uvicorn negotiates websocket options (per-message deflate) before the ASGI app sees a
connection, so they cannot be set from inside the app: this launcher passes
`HERALD_WS_COMPRESSION` (off by default, like Node's socket.io) to uvicorn, with the
port from `PORT`, no access log and a 3-second graceful shutdown.
"""

from __future__ import annotations

import argparse

import uvicorn

from app.core.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m app.web",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.0.0.0", help="interface to listen on")
    parser.add_argument("--port", type=int, default=settings.port, help="port (default: PORT)")
    args = parser.parse_args(argv)
    uvicorn.run("app.main:app", host=args.host, port=args.port, access_log=False,
                ws_per_message_deflate=settings.ws_compression, timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
