"""engine.io's ASGI `translate_request` without a class made per request (`payload_class`).

engine.io's ASGI driver turns each request (a long-poll, a websocket handshake) into a
WSGI-like environ, and its `translate_request` defines the body reader it puts under
`wsgi.input` — `class AwaitablePayload` — inside the function: a new class for every
request. Making a class is one of the dearer things Python does (a type object, its
dict, its method resolution order, a cycle between them), and that class is cyclic
garbage once the request is done (a websocket's handshake drops it at once: sio.py), left
to the garbage collector. In a connect storm that was ~3 % of a connect's CPU.

`translate_request` here is engine.io's, line for line (the same environ, keys and
values in the same order), with that reader as an instance of one class, `Payload`,
which reads the body as engine.io's does (the first event's type decides, as there).

It is engine.io's code copied, so it is used only on the engine.io version it was copied
from: `SOURCE_SHA256` is the digest of engine.io's function source, checked at start
(app/gateway/hooks.py); a different source switches this off (engine.io's own function).
`install(eio)` gives one engine.io server this function (its own copy of the driver's
table, never the module's); `uninstall(eio)` gives it engine.io's back.
"""

from __future__ import annotations

import sys
from typing import Any

from engineio.async_drivers import asgi as eio_asgi

# sha256 of inspect.getsource(engineio.async_drivers.asgi.translate_request), 4.15.1
SOURCE_SHA256 = "39e74733f1fe46aa20e9ba2b651834a108bced1acee44c5a76927173dd7b09ff"


class Payload:
    """engine.io's `AwaitablePayload`: the request's body, read from the ASGI events."""

    __slots__ = ("_first", "_receive", "event", "payload")

    def __init__(self, event: dict[str, Any], receive: Any) -> None:
        self.event = event
        self.payload: bytes | None = None
        self._first = event["type"]  # engine.io reads the first event's type (a closure)
        self._receive = receive

    async def read(self, length: int | None = None) -> bytes | None:
        if self.payload is None and self._first == "http.request":
            # read payload from http request
            self.payload = self.event.get("body") or b""
            while self.event.get("more_body"):
                self.event = await self._receive()
                if self.event["type"] == "http.request" and (
                        length is None or len(self.payload) < length):
                    self.payload += self.event.get("body") or b""
        if length is None:
            r = self.payload
            self.payload = b""
        else:
            r = self.payload[:length]  # type: ignore[index]
            self.payload = self.payload[length:]  # type: ignore[index]
        return r


async def translate_request(scope: dict[str, Any], receive: Any, send: Any) -> dict[str, Any]:
    """engine.io's `translate_request` (engineio/async_drivers/asgi.py), `wsgi.input` a
    `Payload`."""
    event = await receive()
    if event["type"] not in ["http.request", "websocket.connect"]:
        return {}

    raw_uri = scope["path"]
    query_string = ""
    if scope.get("query_string"):
        try:
            query_string = scope["query_string"].decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            raw_uri += "?" + query_string
    environ = {
        "wsgi.input": Payload(event, receive),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.async": True,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "SERVER_SOFTWARE": "asgi",
        "REQUEST_METHOD": scope.get("method", "GET"),
        "PATH_INFO": scope["path"],
        "QUERY_STRING": query_string,
        "RAW_URI": raw_uri,
        "SCRIPT_NAME": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "0",
        "SERVER_NAME": "asgi",
        "SERVER_PORT": "0",
        "asgi.receive": receive,
        "asgi.send": send,
        "asgi.scope": scope,
    }

    for hdr_name, hdr_value in scope["headers"]:
        try:
            hdr_name = hdr_name.upper().decode("utf-8")
            hdr_value = hdr_value.decode("utf-8")
        except UnicodeDecodeError:
            # skip header if it cannot be decoded
            continue
        if hdr_name == "CONTENT-TYPE":
            environ["CONTENT_TYPE"] = hdr_value
            continue
        elif hdr_name == "CONTENT-LENGTH":
            environ["CONTENT_LENGTH"] = hdr_value
            continue

        key = "HTTP_{}".format(hdr_name.replace("-", "_"))
        if key in environ:
            hdr_value = f"{environ[key]},{hdr_value}"

        environ[key] = hdr_value

    environ["wsgi.url_scheme"] = environ.get("HTTP_X_FORWARDED_PROTO", "http")
    return environ


def install(eio: Any) -> bool:
    """`eio` (an engine.io AsyncServer on the ASGI driver) translates requests here; False
    (nothing changed) for another driver."""
    table = getattr(eio, "_async", None)
    if not isinstance(table, dict) or table.get("translate_request") \
            is not eio_asgi.translate_request:
        return False
    eio._async = {**table, "translate_request": translate_request}
    return True


def uninstall(eio: Any) -> None:
    """engine.io's own translate_request for `eio` again."""
    table = getattr(eio, "_async", None)
    if isinstance(table, dict) and table.get("translate_request") is translate_request:
        eio._async = {**table, "translate_request": eio_asgi.translate_request}


__all__ = [
    "SOURCE_SHA256",
    "Payload",
    "install",
    "translate_request",
    "uninstall",
]
