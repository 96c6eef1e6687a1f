"""The websocket upgrade without a second parse (`lean_upgrade`, app/core/slotted_ws.py) and
engine.io's environ without a class per request (`payload_class`, app/gateway/environ.py):
the same request, the same answer, the same bytes on the wire as the libraries' own paths.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn
from engineio.async_drivers import asgi as eio_asgi
from websockets.http11 import Request
from websockets.server import ServerProtocol

from app.core import slotted_ws
from app.core.httphead import bounded_head_protocol
from app.gateway import environ
from testkit.eventually import eventually_async
from testkit.processes import free_port

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
PLAIN = [(b"host", b"127.0.0.1:8000"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket"),
         (b"sec-websocket-version", b"13"), (b"sec-websocket-key", KEY.encode())]
BROWSER = [*PLAIN, (b"origin", b"http://localhost:3000"),
           (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
           (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0"),
           (b"cookie", b"a=1; b=\xe9t\xe9"), (b"accept-language", b"fr,en;q=0.5"),
           (b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-for", b"10.0.0.2"),
           (b"authorization", b"Bearer abc.def.ghi"), (b"x-empty", b""),
           (b"x-tab", b"a\tb")]
URL = b"/socket.io/?EIO=4&transport=websocket"
pytestmark = pytest.mark.anyio


def parsed_by_websockets(method: str, url: bytes, headers: list[tuple[bytes, bytes]]
                         ) -> Request | None:
    """What websockets' parser makes of the head uvicorn writes out for an upgrade (its
    `handle_websocket_upgrade`): the Request, or None if it refuses it."""
    head = [method.encode(), b" ", url, b" HTTP/1.1\r\n"]
    for name, value in headers:
        head += [name, b": ", value, b"\r\n"]
    head.append(b"\r\n")
    conn = ServerProtocol()
    conn.receive_data(b"".join(head))
    events = conn.events_received()
    if not events or conn.handshake_exc is not None:
        return None
    assert isinstance(events[0], Request)
    return events[0]


def same(a: Request, b: Request) -> bool:
    return (a.path, a.method, a.protocol, list(a.headers.raw_items())) == \
        (b.path, b.method, b.protocol, list(b.headers.raw_items()))


@pytest.mark.parametrize("headers", [PLAIN, BROWSER, PLAIN[::-1], [*PLAIN, (b"x", b"a" * 8000)]],
                         ids=["plain", "browser", "reversed", "a_long_line"])
def test_a_plain_head_is_the_request_websockets_parses_from_it(
        headers: list[tuple[bytes, bytes]]) -> None:
    ours = slotted_ws.plain_request("GET", URL, headers)
    theirs = parsed_by_websockets("GET", URL, headers)
    assert ours is not None and theirs is not None
    assert same(ours, theirs)


@pytest.mark.parametrize("method,url,headers", [
    ("POST", URL, PLAIN),
    ("GET", URL, [*PLAIN, (b"content-length", b"0")]),
    ("GET", URL, [*PLAIN, (b"transfer-encoding", b"chunked")]),
    ("GET", URL, [*PLAIN, (b"x-long", b"a" * 8190)]),
    ("GET", b"/" + b"a" * 8200, PLAIN),
    ("GET", b"/a b", PLAIN),
    ("GET", "/é".encode(), PLAIN),
    ("GET", URL, [*PLAIN, (b"bad name", b"x")]),
    ("GET", URL, [*PLAIN, (b"x-ctl", b"a\x01b")]),
    ("GET", URL, PLAIN + [(f"x-{i}".encode(), b"1") for i in range(130)]),
], ids=["post", "content_length", "transfer_encoding", "header_line_too_long",
        "request_line_too_long", "blank_in_path", "non_ascii_path", "bad_header_name",
        "control_character", "too_many_headers"])
def test_a_head_that_is_not_plain_is_left_to_websockets(
        method: str, url: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    assert slotted_ws.plain_request(method, url, headers) is None


@pytest.mark.parametrize("headers", [
    PLAIN, BROWSER,
    [h for h in PLAIN if h[0] != b"sec-websocket-key"],
    [*PLAIN[:4], (b"sec-websocket-key", b"short")],
    [*PLAIN[:3], (b"sec-websocket-version", b"8"), PLAIN[4]],
    [h for h in PLAIN if h[0] != b"upgrade"],
    [*PLAIN, (b"origin", b"http://a"), (b"origin", b"http://b")],
    [*PLAIN, (b"sec-websocket-protocol", b"chat, ,")],
], ids=["plain", "browser", "no_key", "bad_key", "bad_version", "no_upgrade", "two_origins",
        "bad_subprotocols"])
def test_the_lean_accept_answers_as_websockets_accept(
        headers: list[tuple[bytes, bytes]]) -> None:
    request = slotted_ws.plain_request("GET", URL, headers)
    assert request is not None
    lean, own = slotted_ws.LeanServerProtocol(), ServerProtocol()
    ours, theirs = lean.accept(request), own.accept(request)
    date = ("Date", slotted_ws.http_date())
    assert (ours.status_code, ours.reason_phrase, ours.body) == \
        (theirs.status_code, theirs.reason_phrase, theirs.body)
    assert [h if h[0] != "Date" else date for h in ours.headers.raw_items()] == \
        [h if h[0] != "Date" else date for h in theirs.headers.raw_items()]
    assert (lean.accept_called, lean.origin, lean.extensions, lean.subprotocol) == \
        (own.accept_called, own.origin, own.extensions, own.subprotocol)


def test_the_http_date_is_formatdates_of_the_second() -> None:
    import email.utils
    import time

    for _ in range(3):
        before = email.utils.formatdate(usegmt=True)
        ours = slotted_ws.http_date()
        after = email.utils.formatdate(usegmt=True)
        if before == after:
            assert ours == before
            return
        time.sleep(0.01)  # a second boundary in between: again
    raise AssertionError("three second boundaries in a row")


# -- on the wire, a real uvicorn with the web node's protocols ------------------------------

async def echo_app(scope: dict[str, Any], receive: Callable[..., Any],
                   send: Callable[..., Any]) -> None:
    """Accepts, sends "hello", echoes one message, closes."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "hello " + scope["query_string"].decode()})
    message = await receive()
    await send({"type": "websocket.send", "text": "echo " + message["text"]})
    await send({"type": "websocket.close", "code": 1000})


async def served(app: Any) -> AsyncIterator[int]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", ws=slotted_ws.websocket_protocol(),
                            http=bounded_head_protocol(max_bytes=32 * 1024, max_count=100,
                                                       timeout=10.0),
                            ws_ping_interval=None, ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually_async(lambda: server.started, "the server did not start", interval=0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async for p in served(echo_app):
        yield p


MASKED_HI = bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2])  # a client's "hi"


CLOSE = b"\x88\x02\x03\xe8"  # the server's close frame, code 1000


async def conversation(port: int, head: bytes) -> bytes:
    """Everything the server writes for `head` then a client frame "hi": up to its close
    frame, or until it closes the connection (a refusal)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        got = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if not got.startswith(b"HTTP/1.1 101 "):
            return got + await asyncio.wait_for(reader.read(), 5)
        writer.write(MASKED_HI)
        while not got.endswith(CLOSE):
            more = await asyncio.wait_for(reader.read(4096), 5)
            assert more, got
            got += more
        return got
    finally:
        writer.close()


def head_of(headers: list[tuple[bytes, bytes]], url: bytes = b"/ws?x=1") -> bytes:
    return b"GET " + url + b" HTTP/1.1\r\n" + b"".join(
        n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"


def undated(data: bytes) -> bytes:
    return re.sub(rb"\r\ndate: [^\r]*\r\n", b"\r\ndate: -\r\n", data)


@pytest.mark.parametrize("headers", [PLAIN, BROWSER,
                                     [*PLAIN[:3], (b"sec-websocket-version", b"8"), PLAIN[4]],
                                     [*PLAIN, (b"content-length", b"0")]],
                         ids=["plain", "browser", "refused_version", "not_plain"])
async def test_the_handshake_and_frames_on_the_wire_are_the_same_either_way(
        port: int, headers: list[tuple[bytes, bytes]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[Request] = []
    original = slotted_ws.SlottedWebSocketProtocol.take_request

    def take_request(self: Any, request: Request) -> None:
        taken.append(request)
        original(self, request)

    monkeypatch.setattr(slotted_ws.SlottedWebSocketProtocol, "take_request", take_request)
    lean = await conversation(port, head_of(headers))
    monkeypatch.setattr(slotted_ws, "LEAN_UPGRADE", False)
    own = await conversation(port, head_of(headers))
    assert len(taken) == (0 if (b"content-length", b"0") in headers else 1)
    assert undated(lean) == undated(own)
    if headers in (PLAIN, BROWSER):
        assert lean.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"hello x=1" in lean and b"echo hi" in lean


async def test_an_upgrade_under_trace_logging_is_uvicorns_own(
        port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn logs "Upgrading to WebSocket" at its TRACE level: its own path then."""
    taken: list[Any] = []
    monkeypatch.setattr(slotted_ws.SlottedWebSocketProtocol, "take_request",
                        lambda self, request: taken.append(request))
    logger = logging.getLogger("uvicorn.error")
    monkeypatch.setattr(logger, "level", slotted_ws.TRACE)
    answer = await conversation(port, head_of(PLAIN))
    assert answer.startswith(b"HTTP/1.1 101 ") and taken == []


# -- engine.io's environ without a class per request ------------------------------------------

def events(*items: dict[str, Any]) -> Callable[[], Any]:
    queue = list(items)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)
    return receive


SCOPES: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
    ({"type": "http", "method": "POST", "path": "/socket.io/", "query_string": b"EIO=4&sid=a",
      "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5"),
                  (b"x-a", b"1"), (b"x-a", b"2"), (b"x-bad", b"\xff"),
                  (b"x-forwarded-proto", b"https")]},
     [{"type": "http.request", "body": b"ab", "more_body": True},
      {"type": "http.request", "body": b"cd", "more_body": True},
      {"type": "http.request", "body": b"e"}]),
    ({"type": "websocket", "path": "/socket.io/", "query_string": b"EIO=4&transport=websocket",
      "headers": [(b"upgrade", b"websocket"), (b"authorization", b"Bearer x")]},
     [{"type": "websocket.connect"}]),
    ({"type": "http", "method": "GET", "path": "/socket.io/", "query_string": b"\xff",
      "headers": []}, [{"type": "http.request", "body": b""}]),
    ({"type": "http", "method": "GET", "path": "/x", "headers": []},
     [{"type": "http.disconnect"}]),
]


@pytest.mark.parametrize("scope,received", SCOPES, ids=["post", "websocket", "bad_query",
                                                       "disconnect"])
@pytest.mark.parametrize("length", [None, 3])
async def test_requests_are_translated_as_engineio_translates_them(
        scope: dict[str, Any], received: list[dict[str, Any]], length: int | None) -> None:
    mine, engineios = events(*received), events(*received)
    ours = await environ.translate_request(scope, mine, "send")
    theirs = await eio_asgi.translate_request(scope, engineios, "send")
    ours_input, theirs_input = ours.pop("wsgi.input", None), theirs.pop("wsgi.input", None)
    if ours:  # each with its own receive
        assert ours.pop("asgi.receive") is mine and theirs.pop("asgi.receive") is engineios
    assert list(ours.items()) == list(theirs.items())
    assert (ours_input is None) == (theirs_input is None)
    if ours_input is not None and scope["type"] == "http":
        assert [await ours_input.read(length) for _ in range(3)] == \
            [await theirs_input.read(length) for _ in range(3)]
        assert type(ours_input) is environ.Payload  # one class for every request


async def test_a_request_makes_no_class() -> None:
    scope, received = SCOPES[1]
    got = [await environ.translate_request(scope, events(*received), "send") for _ in range(3)]
    assert {type(e["wsgi.input"]) for e in got} == {environ.Payload}
    theirs = [await eio_asgi.translate_request(scope, events(*received), "send")
              for _ in range(2)]
    assert type(theirs[0]["wsgi.input"]) is not type(theirs[1]["wsgi.input"])  # one each


def test_engineio_servers_translate_requests_without_a_class_per_request() -> None:
    from app.gateway.sio import HeraldEngineIO

    eio = HeraldEngineIO(async_mode="asgi")
    assert eio._async["translate_request"] is environ.translate_request
    assert eio_asgi._async["translate_request"] is eio_asgi.translate_request  # the module's
