"""What a hostile client does to a web node's transports: big bodies, binary floods, sessions
that never connect, foreign origins, tokens in URLs, and what a node does on SIGTERM.

Against real uvicorn web nodes (one with small limits, started here), over real HTTP,
websockets and Socket.IO clients; memory is read from /proc/<pid>/status.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.core.settings import Settings
from testkit.clients import SocketClient, token
from testkit.eventually import eventually, eventually_async
from testkit.processes import WebNode
from testkit.world import World

STRICT = {"HERALD_CONNECT_TIMEOUT": "1", "HERALD_CORS_ORIGINS": "https://portal.example",
          "HERALD_MAX_BODY": str(2 * 2**20)}


def rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB: what a request cost at
    its worst, even if freed since."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _strict_node(world: World) -> Iterator[WebNode]:
    web = WebNode({**world.system.env, **STRICT}, world.system.log_dir)
    web.start()
    try:
        yield web
    finally:
        web.stop()


@pytest.fixture(scope="module")
def node(world: World) -> Iterator[WebNode]:
    """A web node with small limits on the world's database, shared by this module's tests
    that neither kill it nor read its peak memory."""
    yield from _strict_node(world)


@pytest.fixture
def own_node(world: World) -> Iterator[WebNode]:
    """A web node with small limits of this test alone: for a test that reads the process's
    peak memory (VmHWM, which an earlier test's peak would hide) or kills it."""
    yield from _strict_node(world)


def _ws_url(node: WebNode, query: str = "") -> str:
    return f"ws://127.0.0.1:{node.port}/socket.io/?EIO=4&transport=websocket{query}"


def _slow_body(total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * chunk
        sent += chunk


def test_a_20mb_body_without_a_token_is_refused_before_it_is_read(own_node: WebNode) -> None:
    before = rss_mb(own_node.proc.pid)  # type: ignore[union-attr]
    body = b'{"stream":"clients","type":"x","data":{"v":"' + b"x" * 20_000_000 + b'"}}'
    with httpx.Client(base_url=own_node.url, timeout=30) as http:
        response = http.post("/api/events", content=body,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 401, response.text
    assert rss_mb(own_node.proc.pid) - before < 40  # type: ignore[union-attr]


def test_a_body_over_the_limit_is_answered_413_while_it_is_read(
    own_node: WebNode, world: World
) -> None:
    headers = {"Authorization": f"Bearer {world.token('service')}",
               "Content-Type": "application/json"}
    before = rss_mb(own_node.proc.pid)  # type: ignore[union-attr]
    with httpx.Client(base_url=own_node.url, timeout=30) as http:
        declared = http.post("/api/events", content=b"x" * (3 * 2**20), headers=headers)
        chunked = http.post("/api/events", content=_slow_body(20 * 2**20), headers=headers)
    assert declared.status_code == 413, declared.text
    assert chunked.status_code == 413, chunked.text
    assert chunked.json()["error"]["code"] == "too_large"
    assert rss_mb(own_node.proc.pid) - before < 40  # type: ignore[union-attr]


def test_a_binary_event_with_many_attachments_closes_the_connection(
    own_node: WebNode, world: World
) -> None:
    pid = own_node.proc.pid  # type: ignore[union-attr]

    async def run() -> tuple[bool, float]:
        socket = SocketClient(own_node.url, world.token("client"))
        await socket.connect()
        before = rss_mb(pid)
        blobs = [bytes([i % 256]) * 999_000 for i in range(40)]
        await socket.sio.emit("heartbeat", {"blobs": blobs})
        await eventually_async(lambda: not socket.sio.connected,
                               "a 40 MB event did not close the connection", 15)
        grown = rss_mb(pid) - before
        still = socket.sio.connected
        await socket.close()
        return still, grown

    still_connected, grown = asyncio.run(run())
    assert not still_connected
    assert grown < 40


def test_an_engineio_session_that_never_connects_is_closed(node: WebNode) -> None:
    async def run() -> list[Any]:
        received: list[Any] = []
        async with ws_connect(_ws_url(node)) as ws:
            try:
                async with asyncio.timeout(8):
                    while True:
                        received.append(await ws.recv())
            except ConnectionClosed:
                received.append("closed")
        return received

    received = asyncio.run(run())
    assert received[0].startswith("0{")  # the engine.io OPEN packet
    assert received[-1] == "closed"


def test_a_socketio_client_that_connects_in_time_is_not_closed(
    node: WebNode, world: World
) -> None:
    async def run() -> bool:
        socket = SocketClient(node.url, world.token("client"))
        await socket.connect()
        await asyncio.sleep(2)  # twice the node's connect timeout
        alive = socket.sio.connected and (await socket.call("heartbeat"))["ok"]
        await socket.close()
        return bool(alive)

    assert asyncio.run(run())


def test_a_foreign_origin_is_refused_and_a_listed_one_allowed(node: WebNode) -> None:
    params = {"EIO": "4", "transport": "polling"}
    with httpx.Client(base_url=node.url, timeout=5) as http:
        evil = http.get("/socket.io/", params=params, headers={"Origin": "https://evil.example"})
        good = http.get("/socket.io/", params=params,
                        headers={"Origin": "https://portal.example"})
    assert evil.status_code == 400
    assert "access-control-allow-origin" not in evil.headers
    assert good.status_code == 200
    assert good.headers["access-control-allow-origin"] == "https://portal.example"

    async def websocket() -> None:
        async with ws_connect(_ws_url(node), origin="https://evil.example") as ws:  # type: ignore[arg-type]
            await ws.recv()

    with pytest.raises((InvalidStatus, ConnectionClosed)):
        asyncio.run(websocket())


def test_cross_origin_defaults_any_in_development_none_in_production() -> None:
    secret = "s" * 40
    assert Settings(HERALD_ENV="development", jwt_secret=None).allowed_origins == "*"
    assert Settings(HERALD_ENV="test", JWT_SECRET=secret).allowed_origins == "*"
    assert Settings(HERALD_ENV="production", JWT_SECRET=secret).allowed_origins is None
    assert Settings(HERALD_ENV="production", JWT_SECRET=secret,
                    HERALD_CORS_ORIGINS="https://a.example, https://b.example"
                    ).allowed_origins == ["https://a.example", "https://b.example"]


def test_a_node_with_its_own_key_but_no_environment_allows_no_foreign_origin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HERALD_ENV", raising=False)
    settings = Settings(JWT_SECRET="s" * 40)
    assert settings.environment == "development"  # the default, as on a forgetful deploy
    assert settings.allowed_origins is None  # the page's own origin only


def test_no_token_reaches_the_web_node_log(node: WebNode, world: World) -> None:
    secret_token = world.token("client")

    async def run() -> None:
        async with ws_connect(_ws_url(node, f"&token={secret_token}")) as ws:
            await ws.recv()
            await ws.send("40" + json.dumps({"token": secret_token}))
            await ws.recv()
    async def refused() -> None:
        # An unknown session: refused before the handshake, a line uvicorn logs (accepted
        # websockets are left out by app.web; Herald logs their connects itself).
        with pytest.raises((InvalidStatus, ConnectionClosed)):
            async with ws_connect(_ws_url(node, f"&sid=nosuchsession&token={secret_token}")
                                  ) as ws:
                await ws.recv()
    asyncio.run(run())
    asyncio.run(refused())
    with httpx.Client(base_url=node.url, timeout=5) as http:
        http.get("/socket.io/", params={"EIO": "4", "transport": "polling",
                                        "token": secret_token})
        http.get("/api/streams/clients/events", params={"token": secret_token})
    # A sentinel: one more refused websocket, its URL logged behind the requests above.
    mark = uuid.uuid4().hex

    async def sentinel() -> None:
        with pytest.raises((InvalidStatus, ConnectionClosed)):
            async with ws_connect(_ws_url(node, f"&sid=nosuchsession&mark={mark}")) as ws:
                await ws.recv()
    asyncio.run(sentinel())
    eventually(lambda: mark in node.log(), "the sentinel was not logged", 10)
    log = node.log()
    assert "WebSocket /socket.io/" in log  # uvicorn did log the URL...
    assert secret_token not in log and secret_token.split(".")[2] not in log  # ...not the token


def test_sigterm_closes_transports_and_the_node_exits_within_seconds(
    own_node: WebNode, world: World
) -> None:
    reasons: list[Any] = []

    async def run() -> float:
        socket = SocketClient(own_node.url, world.token("client"))
        polling = socketio.AsyncClient(reconnection=False)
        for client in (socket.sio, polling):
            client.on("disconnect", lambda reason=None: reasons.append(reason))
        await socket.connect()
        await polling.connect(own_node.url, auth={"token": world.token("technician")},
                              transports=["polling"], wait_timeout=10)
        assert (await socket.call("heartbeat"))["ok"]
        assert (await polling.call("heartbeat"))["ok"]
        started = time.monotonic()
        os.killpg(own_node.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        await eventually_async(lambda: not own_node.alive(), "the node did not exit", 15)
        elapsed = time.monotonic() - started
        await eventually_async(lambda: len(reasons) >= 2, lambda: f"closed: {reasons}", 10)
        await socket.close()
        if polling.connected:
            await polling.disconnect()
        return elapsed

    elapsed = asyncio.run(run())
    assert not own_node.alive()
    assert elapsed < 8
    # A closed transport (the client reconnects), never a Socket.IO disconnect (final).
    assert len(reasons) == 2, reasons
    assert set(reasons) <= {"transport close", "transport error"}, reasons


def test_refused_connects_leave_no_socket_behind(world: World) -> None:
    def connected_sockets() -> float:
        text = httpx.get(f"{world.url}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("herald_connected_sockets"))

    baseline = connected_sockets()
    users = [world.api.user("client")[1] for _ in range(10)]  # 20 connects each

    async def run() -> list[Any]:
        async def one(i: int) -> Any:
            socket = SocketClient(world.url, users[i % 10], positions={
                f"project-{2**31 + i}": {"offset": 0}, "ticket-99999999999": {"offset": 0}})
            await socket.connect()
            try:
                return (await socket.wait_count("connected", 1))[0].payload["recovered"]
            finally:
                await socket.close()
        out = []
        for start in range(0, 200, 20):
            out += await asyncio.gather(*(one(i) for i in range(start, start + 20)))
        return out

    recovered = asyncio.run(run())
    assert len(recovered) == 200 and all(not any(r.values()) for r in recovered)
    eventually(lambda: connected_sockets() == baseline,
               lambda: f"{connected_sockets()} sockets, {baseline} before", 10, interval=0.1)


def test_an_expiry_that_is_not_a_sane_number_is_refused(world: World) -> None:
    import jwt

    from testkit.testrun import SECRET
    uid = world.ids["client"]
    for exp in (2**70, "9999999999", 1e300, True):
        bad = jwt.encode({"sub": str(uid), "email": "client@world.test", "role": "client",
                          "exp": exp}, SECRET, algorithm="HS256")
        response = world.api.request("GET", f"/api/streams/user-{uid}/events", token=bad)
        assert response.status_code == 401, (exp, response.text)
    assert token(uid, "client", "client@world.test")  # a normal one still mints


def test_a_connect_the_node_cannot_complete_loses_its_transport_not_left_hanging(
    world: World
) -> None:
    """The database is unreachable: every CONNECT ends at once with its transport closed
    (before: no answer at all, and a socket counted forever). A closed transport, not a
    refusal: socket.io-client retries the one by itself and takes the other as final."""
    dead = WebNode({**world.system.env, "DATABASE_URL":
                    "postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=2"},
                   world.system.log_dir)
    dead.start()
    url = dead.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"

    async def attempt() -> list[str]:
        frames: list[str] = []
        async with ws_connect(url) as ws:
            await ws.recv()  # engine.io OPEN
            await ws.send("40" + json.dumps({"token": world.token("client")}))
            with pytest.raises(ConnectionClosed):
                while True:  # a hang would end in TimeoutError instead
                    frames.append(str(await asyncio.wait_for(ws.recv(), timeout=10)))
        return frames

    async def run() -> list[list[str]]:
        return [await attempt() for _ in range(5)]

    try:
        outcomes = asyncio.run(run())
    finally:
        dead.stop()
    assert outcomes == [[]] * 5  # no CONNECT, no CONNECT_ERROR: only the close
