"""`python -m app.web`: the web node (uvicorn serving `app.main:app`), as the
Procfile runs it, with the web-server options that are Herald settings.

uvicorn negotiates websocket options (per-message deflate) before the ASGI app sees a
connection, so they cannot be set from inside the app: this launcher passes
`HERALD_WS_COMPRESSION` (off by default, like Node's socket.io) to uvicorn, with the
port from `PORT`, no access log and a 3-second graceful shutdown. It also bounds what a
client may send before the app sees it: request heads (size, header count and time, see
app/core/httphead.py), websocket messages (the 1 MB frame limit, not uvicorn's 16 MiB)
and the keep-alive idle time (`HERALD_KEEP_ALIVE`).

For many sockets on one node it also:
- raises the open-file limit to the hard limit (one descriptor per socket);
- serves websockets with uvicorn's sans-I/O protocol whose per-connection attributes are
  slots, not an instance dict (~1.3 KB less per socket, app/core/slotted_ws.py), and
  hands it the upgrade request httptools parsed rather than its bytes to parse again
  (`lean_upgrade`, docs/fastpaths.md);
- leaves the websocket heartbeat to engine.io (no uvicorn keepalive pings: a timer per
  socket and a second ping frame);
- leaves out uvicorn's own lines per websocket (`"WebSocket /socket.io/..." [accepted]`,
  `connection open`, `connection closed`): Herald logs each socket's connect and
  disconnect itself, with its user; two more lines per connect cost a connect storm
  about a tenth of its time. Its websocket protocol never builds them (a `QuietLogger`,
  app/core/slotted_ws.py); `PerConnectionLines` on `uvicorn.error` drops them should
  another protocol log them;
- builds the app before serving and then moves every object alive at that point (modules,
  classes, the app's routes and settings: ~150,000 objects) out of the garbage
  collector's sight (`gc.freeze()`): a full collection then scans the sockets' objects,
  not those too. Only start-up objects are frozen, before any socket exists: a closed
  socket's objects are collected as before;
- collects the youngest generation every `GEN0_THRESHOLD` (20,000) new container
  objects, not CPython's 700: a connect makes hundreds, most of which live on with the
  socket, so a connect storm ran a young collection every four connects and, as those
  survivors pile up, middle and full collections of them (6,000 connects at ~300/s:
  1.9-2.1 s of collections, ~0.3 ms of each ~3 ms connect; 0.9 s at 5,000). At 20,000 a
  storm's sockets are mostly frozen (app/gateway/gcpolicy.py) before a middle collection
  would scan them: no middle collection ran in 2,000 connects (3-4 at 5,000), and the
  collections of 2,000 connects took about half the time (thread CPU, 4 runs each). The
  freeze collects the young generations first, so the garbage a larger generation holds
  longer is not frozen with the sockets. The other thresholds are CPython's.
"""

from __future__ import annotations

import argparse
import gc
import logging
import resource

import uvicorn

from app.core.httphead import bounded_head_protocol
from app.core.settings import Settings, get_settings
from app.core.slotted_ws import websocket_protocol

PER_CONNECTION = ("connection open", "connection closed")
# The largest websocket message uvicorn reads whole: the gateway's 1 MB frame limit
# (app.gateway.server.MAX_FRAME) and a margin, not uvicorn's 16 MiB (a test keeps them in step).
WS_MAX_SIZE = 1_000_000 + 64 * 1024


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
    config = server_config(settings, host=args.host, port=args.port)
    # After uvicorn's own logging set-up (in Config), before any connection.
    logging.getLogger("uvicorn.error").addFilter(PerConnectionLines())
    config.load()  # the app built now (uvicorn would at start-up), to be frozen with the rest
    freeze_start_up()
    uvicorn.Server(config).run()


def server_config(settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration for the web node, Herald's settings applied."""
    return uvicorn.Config("app.main:app", host=host, port=port, access_log=False,
                          http=bounded_head_protocol(max_bytes=settings.max_header_bytes,
                                                     max_count=settings.max_headers,
                                                     timeout=settings.header_timeout),
                          timeout_keep_alive=settings.keep_alive,
                          # uvicorn's sans-I/O websocket protocol, its ~37 attributes
                          # in slots: ~1.3 KB less per open websocket (slotted_ws.py).
                          ws=websocket_protocol(),
                          ws_max_size=WS_MAX_SIZE,
                          # engine.io's heartbeat (PING every 25 s, a client silent past its
                          # timeout is closed) is the one: uvicorn's own websocket pings
                          # would be a second timer per socket and a ping frame each 20 s.
                          ws_ping_interval=None,
                          ws_per_message_deflate=settings.ws_compression,
                          timeout_graceful_shutdown=3)


GEN0_THRESHOLD = 20_000


def freeze_start_up() -> int:
    """Collect, then exempt every object alive now from later collections; how many.
    Young collections from now on every GEN0_THRESHOLD new objects."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, *gc.get_threshold()[1:])
    return gc.get_freeze_count()


if __name__ == "__main__":
    main()
