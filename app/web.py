"""`python -m app.web`: the web node (uvicorn serving `app.main:app`), as the
Procfile runs it, with the web-server options that are Herald settings.

uvicorn negotiates websocket options (per-message deflate) before the ASGI app sees a
connection, so they cannot be set from inside the app: this launcher passes
`HERALD_WS_COMPRESSION` (off by default, like Node's socket.io) to uvicorn, with the
port from `PORT`, no access log and a 3-second graceful shutdown.

For many sockets on one node it also:
- raises the open-file limit to the hard limit (one descriptor per socket);
- leaves out uvicorn's own lines per websocket (`"WebSocket /socket.io/..." [accepted]`,
  `connection open`, `connection closed`): Herald logs each socket's connect and
  disconnect itself, with its user; two more lines per connect cost a connect storm
  about a tenth of its time.
"""

from __future__ import annotations

import argparse
import logging
import resource

import uvicorn

from app.core.settings import get_settings

PER_CONNECTION = ("connection open", "connection closed")


class PerConnectionLines(logging.Filter):
    """Drops uvicorn's log lines per websocket connection (see the module)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if not isinstance(msg, str):
            return True
        if msg in PER_CONNECTION:
            return False
        return not (msg.startswith('%s - "WebSocket %s"') and msg.endswith("[accepted]"))


def raise_fd_limit() -> int:
    """The soft open-file limit raised to the hard limit; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m app.web",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.0.0.0", help="interface to listen on")
    parser.add_argument("--port", type=int, default=settings.port, help="port (default: PORT)")
    args = parser.parse_args(argv)
    raise_fd_limit()
    config = uvicorn.Config("app.main:app", host=args.host, port=args.port, access_log=False,
                            ws_per_message_deflate=settings.ws_compression,
                            timeout_graceful_shutdown=3)
    # After uvicorn's own logging set-up (in Config), before any connection.
    logging.getLogger("uvicorn.error").addFilter(PerConnectionLines())
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
