"""herald_client's publishers against a real Herald: retries are safe, 4xx are typed errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from herald_client import (
    AsyncPublisher,
    AuthError,
    Backoff,
    EventSpec,
    Forbidden,
    HeraldError,
    Invalid,
    Publisher,
)
from sqlalchemy import func, select

from app.outbox.tables import Event
from testkit.clients import token
from testkit.eventually import eventually_async
from testkit.processes import WebNode, free_port
from testkit.system import System

SERVICE = token("billing", "service", "billing@services.test")
QUICK = Backoff(attempts=12, base=0.1, cap=1.0)
PATIENT = Backoff(attempts=90, base=0.1, cap=1.0)  # outlasts a web node's start under load


def stored(system: System, stream: str) -> list[tuple[int, str]]:
    """(offset, title) of every event stored on `stream`."""
    with system.factory() as session:
        rows = session.execute(select(Event.offset, Event.payload).where(Event.stream == stream)
                               .order_by(Event.offset)).all()
    return [(int(offset), str(payload.get("title"))) for offset, payload in rows]


def total_events(system: System) -> int:
    with system.factory() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


class CountingTransport(httpx.HTTPTransport):
    """The real HTTP transport, counting the requests it is asked to send."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return await super().handle_async_request(request)


class DropFirstAnswer:
    """A loopback TCP proxy to a web node. Its first connection's request reaches the server,
    which stores the event and answers; the proxy then cuts the connection instead of passing
    the answer on. Later connections are passed through untouched."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.dropped = b""
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, fn: Any, *args: Any) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            self._spawn(self._pump, client, upstream)
            if self.connections == 1:
                self._spawn(self._swallow, upstream, client)
            else:
                self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _swallow(self, upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.dropped = upstream.recv(65536)  # the server's answer: it stored the event
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(pg_system: System) -> Iterator[DropFirstAnswer]:
    relay = DropFirstAnswer(pg_system.webs[0].port)
    yield relay
    relay.close()


def test_an_answer_lost_after_the_server_stored_the_event_is_retried_and_stored_once(
    pg_system: System, proxy: DropFirstAnswer
) -> None:
    user_id, _ = pg_system.api().user("client")
    stream = f"user-{user_id}"
    with Publisher(proxy.url, SERVICE, backoff=QUICK) as publisher:
        out = publisher.publish(stream, "notification",
                                {"type": "info", "title": "once", "message": "m"})
    assert proxy.connections == 2 and b"201" in proxy.dropped.split(b"\r\n")[0]
    assert (out.stream, out.offset, out.duplicate) == (stream, 1, True)
    assert stored(pg_system, stream) == [(1, "once")]


def test_a_batch_whose_answer_was_lost_is_retried_and_stored_once(
    pg_system: System, proxy: DropFirstAnswer
) -> None:
    user_id, _ = pg_system.api().user("client")
    stream = f"user-{user_id}"
    events = [EventSpec(stream, "notification", {"type": "info", "title": f"b{i}",
                                                 "message": "m"}) for i in range(3)]
    with Publisher(proxy.url, SERVICE, backoff=QUICK) as publisher:
        out = publisher.publish_many(events)
    assert proxy.connections == 2
    assert [(p.offset, p.duplicate) for p in out] == [(1, True), (2, True), (3, True)]
    assert stored(pg_system, stream) == [(1, "b0"), (2, "b1"), (3, "b2")]


@pytest.mark.anyio
async def test_publishing_waits_for_a_server_that_is_not_up_yet(
    pg_system: System, tmp_path: Path
) -> None:
    user_id, _ = pg_system.api().user("client")
    stream = f"user-{user_id}"
    late = WebNode(pg_system.env, tmp_path, port=free_port())
    transport = AsyncCountingTransport()

    async def start_later() -> None:  # once the publisher was refused
        await eventually_async(lambda: transport.requests >= 1, "the publisher never tried")
        await asyncio.to_thread(late.start)

    starting = asyncio.create_task(start_later())
    try:
        async with AsyncPublisher(late.url, SERVICE, backoff=PATIENT,
                                  transport=transport) as publisher:
            out = await publisher.publish(stream, "notification",
                                          {"type": "info", "title": "late", "message": "m"},
                                          idempotency_key="invoice-42")
        await starting
        assert transport.requests > 1  # refused at first, then stored
        assert (out.offset, out.duplicate) == (1, False)
        assert stored(pg_system, stream) == [(1, "late")]
    finally:
        starting.cancel()
        late.stop()


@pytest.mark.parametrize(("token_", "stream", "error"), [
    ("not-a-jwt", "user-1", AuthError),
    (token(1, "admin"), "user-1", Forbidden),
    (SERVICE, "no such stream", Invalid),
])
def test_a_refusal_raises_its_typed_error_without_retrying(
    pg_system: System, token_: str, stream: str, error: type[HeraldError]
) -> None:
    before = total_events(pg_system)
    transport = CountingTransport()
    with Publisher(pg_system.url, token_, backoff=QUICK, transport=transport) as publisher, \
            pytest.raises(error) as raised:
        publisher.publish(stream, "notification", {"type": "info", "title": "t", "message": "m"})
    assert transport.requests == 1
    assert raised.value.status in {401, 403, 422} and raised.value.code != "error"
    assert total_events(pg_system) == before
