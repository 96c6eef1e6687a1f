"""What an idle websocket holds on the web node (issue 16, item 6: memory per socket).

uvicorn's protocol keeps its attributes in slots (app/core/slotted_ws.py), and a socket
that starts on the websocket reads its messages in the handler's own task
(`HeraldSocket._websocket_session`), with engine.io's limits and ends: a real uvicorn and
raw websocket clients (tests/test_fanout.py's node).
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from app import web
from app.core.settings import Settings
from app.core.slotted_ws import ATTRIBUTES, SlottedWebSocketProtocol
from app.gateway import hooks
from testkit.eventually import eventually_async
from tests.test_fanout import Node, node

__all__ = ["node"]  # the fixture, imported

SERVER_PARTS = ("/uvicorn/", "/engineio/", "/socketio/", "/app/gateway/")


def _server_tasks() -> list[asyncio.Task[Any]]:
    """The tasks of the server side (uvicorn, engine.io, python-socketio, the gateway)."""
    tasks = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and any(p in code.co_filename for p in SERVER_PARTS):
            tasks.append(task)
    return tasks


def _url(node: Node) -> str:
    return node.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"


async def _open(node: Node) -> Any:
    ws = await ws_connect(_url(node), ping_interval=None)
    assert str(await ws.recv()).startswith("0{")  # engine.io's OPEN
    return ws


async def _closed_by_server(ws: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()


def test_the_launcher_serves_websockets_with_the_slotted_protocol() -> None:
    config = web.server_config(Settings(), host="127.0.0.1", port=8000)  # type: ignore[call-arg]
    assert config.ws is SlottedWebSocketProtocol


def test_every_attribute_of_uvicorns_protocol_is_a_slot() -> None:
    plain = hooks._uvicorn()  # uvicorn's own class, as built for a connection
    names = set(vars(plain)) | {"request", "response", "scope"}  # set at the handshake
    assert names <= set(ATTRIBUTES)
    lean = SlottedWebSocketProtocol.__new__(SlottedWebSocketProtocol)
    for name in names:
        setattr(lean, name, None)
    assert vars(lean) == {}
    assert sys.getsizeof(lean) < 400 < sys.getsizeof(vars(plain))


@pytest.mark.anyio
async def test_an_idle_websocket_holds_two_server_tasks(node: Node) -> None:
    """uvicorn's task running the app (its reader in it) and engine.io's writer: no
    reader task waiting per message."""
    sockets = [await _open(node)]  # the server's own tasks (pub/sub, service) started
    try:
        await eventually_async(lambda: len(node.sio.eio.sockets) == 1, "not connected")
        before = len(_server_tasks())
        sockets += [await _open(node) for _ in range(5)]
        await eventually_async(lambda: len(node.sio.eio.sockets) == 6, "not all connected")
        assert len(_server_tasks()) - before == 2 * 5
    finally:
        for ws in sockets:
            await ws.close()


def _socket_timeouts() -> int:
    """The asyncio.timeout blocks the server's tasks are in (not yet expired)."""
    tasks = set(_server_tasks())
    return sum(1 for o in gc.get_objects() if type(o) is asyncio.Timeout
               and getattr(o, "_task", None) in tasks and o.when() is not None
               and not o.expired())


@pytest.mark.anyio
async def test_an_idle_websocket_waits_under_one_timeout(node: Node) -> None:
    """The reader's; the writer waits without one of its own (the reader's end ends it).
    (The heartbeat's timers are shared: app/gateway/heartbeat.py.)"""
    sockets = [await _open(node)]  # the server's own tasks (pub/sub, service) started
    try:
        await eventually_async(lambda: len(node.sio.eio.sockets) == 1, "not connected")
        before = len(_server_tasks())
        sockets += [await _open(node) for _ in range(5)]
        await eventually_async(lambda: len(_server_tasks()) - before == 2 * 5,
                               "not all connected")  # each reader and writer running
        # Once settled: a socket's handshake may still be in a timeout of its own (seen
        # once on a loaded machine: 7); with a timer per writer too it stays at 12.
        await eventually_async(lambda: _socket_timeouts() == 6,
                               lambda: f"{_socket_timeouts()} timeouts for 6 idle sockets")
    finally:
        for ws in sockets:
            await ws.close()


@pytest.mark.anyio
async def test_a_silent_websocket_is_closed_after_ping_interval_and_timeout(node: Node) -> None:
    node.sio.eio.ping_interval, node.sio.eio.ping_timeout = 0.2, 0.3
    ws = await _open(node)
    await _closed_by_server(ws)  # never answered a PING nor sent anything
    await eventually_async(lambda: not node.sio.eio.sockets, "the session was not closed")


@pytest.mark.anyio
async def test_a_websocket_that_answers_pings_stays_open(node: Node) -> None:
    node.sio.eio.ping_interval, node.sio.eio.ping_timeout = 0.1, 0.3
    ws = await _open(node)
    try:
        for _ in range(5):  # 5 PINGs answered: well past interval + timeout
            async with asyncio.timeout(5):
                assert await ws.recv() == "2"
            await ws.send("3")
        assert len(node.sio.eio.sockets) == 1
    finally:
        await ws.close()


@pytest.mark.anyio
async def test_a_message_over_the_buffer_size_closes_the_websocket(node: Node) -> None:
    node.sio.eio.max_http_buffer_size = 100
    ws = await _open(node)
    await ws.send("4" + "x" * 200)
    await _closed_by_server(ws)
    await eventually_async(lambda: not node.sio.eio.sockets, "the session was not closed")
