"""What the web node's HTTP server bounds before the app sees a request: the size, header
count and time of a request head (431 / close), websocket message size, keep-alive.

Against a real web node (`python -m app.web`) over raw sockets, with small limits.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame
from websockets.sync.client import connect as ws_connect
from websockets.uri import parse_uri

from app import web
from app.core.httphead import BoundedHeadProtocol
from app.core.settings import Settings
from app.gateway.server import MAX_FRAME
from testkit.eventually import eventually
from testkit.processes import WebNode
from testkit.system import System

LIMIT = 16 * 1024
LIMITS = {"HERALD_MAX_HEADER_BYTES": str(LIMIT), "HERALD_MAX_HEADERS": "50",
          "HERALD_HEADER_TIMEOUT": "1", "HERALD_LOG_RATE": "5"}
HUGE = 100 * 2**20


@pytest.fixture(scope="module")
def node(pg_system_session: System) -> Iterator[WebNode]:
    web_node = WebNode({**pg_system_session.env, **LIMITS}, pg_system_session.log_dir)
    web_node.start()
    try:
        yield web_node
    finally:
        web_node.stop()


def _connect(node: WebNode) -> socket.socket:
    return socket.create_connection(("127.0.0.1", node.port), timeout=30)


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or 30 s of silence)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _send_until_answered(sock: socket.socket, head: bytes, total: int) -> tuple[int, bytes]:
    """Send `head`, then header bytes up to `total`, stopping as soon as the server answers
    or closes; (bytes sent, what the server answered)."""
    sock.setblocking(False)
    sent, answer, filler = 0, b"", b"a" * 65536
    pending = head

    def step() -> bool:
        """Read or send once: True once the server answered and closed, or all was sent."""
        nonlocal sent, answer, pending
        readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 5)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return True
            answer += chunk
            return not chunk
        if writable:
            if not pending:
                pending = filler[: total - sent]
            try:
                n = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                return True
            sent, pending = sent + n, pending[n:]
            return False
        return sent >= total  # all sent and nothing comes back

    eventually(step, lambda: f"no answer; {sent} bytes sent", 90, interval=0)
    sock.setblocking(True)
    return sent, answer


def test_a_100mb_header_is_refused_431_after_the_limit_while_healthz_answers(
        node: WebNode) -> None:
    with _connect(node) as sock:
        # A head just short of the limit: the request is open, the node still serves others.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (LIMIT - 100))
        assert httpx.get(f"{node.url}/healthz", timeout=30).status_code == 200
        sent, answer = _send_until_answered(sock, b"", HUGE)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"code": "headers_too_large"' in answer
    # The client was stopped after the limit: far short of 100 MB (kernel buffers aside).
    assert sent < 16 * 2**20
    assert httpx.get(f"{node.url}/healthz", timeout=30).status_code == 200
    assert f"request head over {LIMIT} bytes" in node.log()


def test_a_websocket_upgrade_with_a_huge_header_is_refused_431(node: WebNode) -> None:
    head = (b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Big: ")
    with _connect(node) as sock:
        sent, answer = _send_until_answered(sock, head, HUGE)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert sent < 16 * 2**20


def test_more_header_lines_than_the_limit_are_refused_431(node: WebNode) -> None:
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(51))
    with _connect(node) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_heads_within_the_limits_are_served(node: WebNode) -> None:
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(40))
    big = b"X-Big: " + b"a" * (LIMIT - 2048) + b"\r\n"
    for head in (lines, big):
        with _connect(node) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + head
                         + b"Connection: close\r\n\r\n")
            assert _answer(sock).startswith(b"HTTP/1.1 200 ")


def test_pipelined_requests_are_each_bounded_and_served(node: WebNode) -> None:
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (LIMIT // 2) + b"\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with _connect(node) as sock:
        sock.sendall(one * 3 + last)
        assert _answer(sock).count(b"HTTP/1.1 200 ") == 4


def test_bodies_are_not_counted_as_the_next_head(node: WebNode) -> None:
    body = b"x" * (3 * LIMIT)
    sized = b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    chunked = (b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with _connect(node) as sock:
        sock.sendall(sized + body + chunked + last)
        answer = _answer(sock)
    assert answer.count(b"HTTP/1.1 ") == 3 and b" 431 " not in answer, answer[:300]


def test_a_connection_that_sends_nothing_is_closed(node: WebNode) -> None:
    with _connect(node) as sock:
        assert sock.recv(1024) == b""  # closed by the node (HERALD_HEADER_TIMEOUT), no answer


def test_a_head_that_trickles_in_is_closed_before_it_is_complete(node: WebNode) -> None:
    with _connect(node) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed = threading.Event()

        def trickle() -> None:
            for i in range(300):  # a header line every 0.1 s: 30 s, far past the timeout
                try:
                    sock.sendall(b"X-%d: v\r\n" % i)
                except OSError:
                    break
                if closed.wait(0.1):
                    break

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            assert sock.recv(1024) == b""
        finally:
            closed.set()
            sender.join()


def test_a_2mb_websocket_message_closes_the_connection(node: WebNode) -> None:
    """Over a raw socket (websockets' sans-I/O protocol): the node closes mid-message, so a
    client library still sending may see a reset before it reads the close frame."""
    url = f"ws://127.0.0.1:{node.port}/socket.io/?EIO=4&transport=websocket"
    ws = ClientProtocol(parse_uri(url), max_size=None)
    with _connect(node) as sock:
        ws.send_request(ws.connect())
        sock.sendall(b"".join(ws.data_to_send()))
        frames: list[Frame] = []
        while not frames:  # the handshake's answer, then engine.io's open packet
            ws.receive_data(sock.recv(65536))
            frames += [e for e in ws.events_received() if isinstance(e, Frame)]
        assert frames[0].data.startswith(b"0{")
        ws.send_text(("4" + "x" * 2_000_000).encode())
        message = b"".join(ws.data_to_send())
        _, answer = _send_until_answered(sock, message, len(message))
    ws.receive_data(answer)
    assert ws.close_rcvd is not None and ws.close_rcvd.code == 1009  # message too big


def test_the_launcher_passes_the_limits_to_uvicorn() -> None:
    settings = Settings(HERALD_MAX_HEADER_BYTES=8192, HERALD_MAX_HEADERS=20,  # type: ignore[call-arg]
                        HERALD_HEADER_TIMEOUT=3, HERALD_KEEP_ALIVE=75)
    config = web.server_config(settings, host="127.0.0.1", port=8000)
    assert config.timeout_keep_alive == 75
    assert isinstance(config.http, type) and issubclass(config.http, BoundedHeadProtocol)
    assert (config.http.max_bytes, config.http.max_count, config.http.timeout) == (8192, 20, 3)
    assert MAX_FRAME < config.ws_max_size < 2 * MAX_FRAME


def test_a_flood_of_bad_packets_writes_a_few_one_line_warnings(node: WebNode) -> None:
    """Each connection's malformed packet closes its transport (app/gateway/sio.py) with at
    most one short line, never a traceback, and the lines share a budget."""
    url = f"ws://127.0.0.1:{node.port}/socket.io/?EIO=4&transport=websocket"
    flood = 60
    for i in range(flood):
        with ws_connect(url) as ws:
            assert str(ws.recv(timeout=10)).startswith("0{")
            ws.send("49" if i % 2 else "42[not json")
            with pytest.raises(ConnectionClosed):
                while True:  # until the node closes the transport
                    ws.recv(timeout=10)
    # No wait: each line is written before its transport is closed (app/gateway/sio.py),
    # and each connection above ended (ConnectionClosed) before the next one began.
    log = node.log()
    lines = [line for line in log.splitlines()
             if "malformed packet" in line or "bad packet from a client" in line]
    assert "Traceback" not in log
    assert 0 < len(lines) <= flood
    assert all(len(line) < 500 for line in lines)
