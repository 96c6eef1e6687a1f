"""ASGI middleware: bodies bounded while they are read, and tokens checked before reading.

FastAPI reads and parses a request's whole body before it runs any dependency, the
token check included: a 20 MB body without a token would be read and parsed only to be
refused. This layer sits in front of everything (the API and engine.io's polling):

- a request whose `Content-Length` is over the limit is answered `413` at once;
- a body without one is counted as it arrives and answered `413` as soon as it passes
  the limit (whatever the app was doing with it is dropped);
- a request with a body to `/api/` must carry a well-formed, valid bearer token, checked
  before a byte is read (`401` otherwise). Whether the token's user may do the thing is
  still decided by the route. A public `/api/` route taking a body would go in PUBLIC.

The limit is the route's (`route_limit`): only the batch publish (`POST /api/events`) may
send megabytes (`HERALD_MAX_BODY`); routes that carry free text or lists (chat messages,
notifications, the outbox retry) four times `HERALD_MAX_SMALL_BODY`; every other body (a
PATCH, a create) `HERALD_MAX_SMALL_BODY`; engine.io's polling, the 1 MB frame limit. A
body over `THREAD_PARSE` bytes is parsed in a worker thread (`ThreadedJSONRoute`), so a
big batch does not hold the event loop while it is parsed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

import anyio
from fastapi import Request, Response
from fastapi.routing import APIRoute

from app.core.errors import AuthError
from app.portal.auth import decode_cached

log = logging.getLogger("herald.api")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]
PUBLIC: tuple[str, ...] = ("/api/dev/",)  # demo tokens: development and tests only
BATCH = re.compile(r"^/api/events/?$")  # POST: the batch publish, megabytes
TEXT = re.compile(r"^/api/(tickets/[^/]+/messages|notifications|admin/outbox/retry)/?$")  # POST
THREAD_PARSE = 64 * 1024


class _TooLarge(Exception):
    pass


async def _answer(send: Send, status: int, code: str, message: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class BodyLimit:
    def __init__(self, app: ASGI, *, max_body: int, frame_limit: int, secret: str,
                 small_body: int = 64 * 1024, socketio_path: str = "/socket.io") -> None:
        self.app = app
        self.max_body = max_body
        self.small_body = small_body
        self.frame_limit = frame_limit
        self.secret = secret
        self.socketio_path = socketio_path

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: a websocket runs as the app's own awaitable, without a
        # suspended frame of this class for its whole life (idle sockets' memory).
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        limit = self.route_limit(scope.get("method", "GET"), path)
        length = _header(scope, b"content-length")
        has_body = bool(length and length.strip() != "0") or _header(
            scope, b"transfer-encoding") is not None
        if has_body and path.startswith("/api/") and not path.startswith(PUBLIC):
            refusal = self._token_refusal(scope)
            if refusal is not None:
                await _answer(send, 401, refusal.code, refusal.message,
                              [(b"www-authenticate", b"Bearer")])
                return
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            await _answer(send, 413, "too_large", f"request body over {limit} bytes")
            return
        await self._counted(scope, receive, send, limit)

    def route_limit(self, method: str, path: str) -> int:
        """The largest body `method path` may send (see the module)."""
        if path.startswith(self.socketio_path):
            return self.frame_limit
        if method == "POST" and BATCH.match(path):
            return self.max_body
        if method == "POST" and TEXT.match(path):
            return 4 * self.small_body
        return self.small_body

    def _token_refusal(self, scope: Scope) -> AuthError | None:
        header = _header(scope, b"authorization")
        if not header:
            return AuthError("missing bearer token", code="token_missing")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return AuthError("expected 'Authorization: Bearer <token>'", code="token_invalid")
        try:
            decode_cached(token.strip(), secret=self.secret)
        except AuthError as exc:
            return exc
        return None

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        state = {"read": 0, "over": False, "started": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > limit:
                    state["over"] = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                return  # the app's answer to a body it never got whole: ours goes instead
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            log.info("request body over the limit path=%s limit=%d", scope.get("path"), limit)
            await _answer(send, 413, "too_large", f"request body over {limit} bytes")


class ThreadedJSONRequest(Request):
    """A request whose JSON body, when big, is parsed in a worker thread."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            if len(body) > THREAD_PARSE:
                self._json = await anyio.to_thread.run_sync(json.loads, body)
            else:
                self._json = json.loads(body)
        return self._json


class ThreadedJSONRoute(APIRoute):
    """`APIRouter(route_class=ThreadedJSONRoute)`: the routes' big bodies parsed off the loop
    (FastAPI's own way to change how a route reads its request)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def threaded(request: Request) -> Response:
            return await handler(ThreadedJSONRequest(request.scope, request.receive))

        return threaded


__all__ = ["PUBLIC", "BodyLimit", "ThreadedJSONRoute"]
