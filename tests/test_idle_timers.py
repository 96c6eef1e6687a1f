"""What an idle socket waits on without a timer of its own: engine.io's heartbeat on a
shared wheel (app/gateway/heartbeat.py) and its token's expiry per second
(app/gateway/identity.py). Unit tests with stand-in sockets; tests/test_direct.py and
tests/test_socket_identity.py run both on real web nodes."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from engineio import packet

from app.gateway.heartbeat import PingWheel, wheel_of
from app.gateway.identity import Identities
from app.gateway.sendqueue import HeraldSocket, LeanQueue
from app.portal.auth import Principal
from testkit.eventually import eventually_async

pytestmark = pytest.mark.anyio


class Due:
    def __init__(self) -> None:
        self.pinged = 0

    def _ping_due(self) -> None:
        self.pinged += 1


def timers() -> int:
    return len(asyncio.get_running_loop()._scheduled)  # type: ignore[attr-defined]


async def test_sockets_due_in_the_same_tick_share_one_timer() -> None:
    wheel = PingWheel(25.0)
    before = timers()
    sockets = [Due() for _ in range(500)]
    for socket in sockets:
        wheel.add(socket)
    assert timers() - before <= 2  # one per tick the adds straddle (1 s each)
    assert len(wheel) == 500


async def test_each_socket_is_pinged_once_after_the_interval() -> None:
    wheel = PingWheel(0.05)
    sockets = [Due() for _ in range(20)]
    started = time.monotonic()
    for socket in sockets:
        wheel.add(socket)
    await eventually_async(lambda: all(s.pinged for s in sockets))
    assert time.monotonic() - started >= 0.05
    assert [s.pinged for s in sockets] == [1] * 20 and len(wheel) == 0


class FakeServer:
    ping_interval = 0.05


def herald_socket(server: Any) -> HeraldSocket:
    socket = HeraldSocket.__new__(HeraldSocket)  # the heartbeat's state only
    socket.server, socket.queue = server, LeanQueue()
    socket.closing = socket.closed = False
    socket.last_ping = time.time()  # as engine.io starts it: "answered"
    return socket


async def test_a_socket_gets_its_ping_on_its_queue_and_a_closed_one_none() -> None:
    server = FakeServer()
    open_, closed = herald_socket(server), herald_socket(server)
    for socket in (open_, closed):
        socket.schedule_ping()
        assert socket.last_ping is None
    closed.closed = True
    await eventually_async(lambda: not open_.queue.empty())
    pkt = open_.queue.get_nowait()
    assert pkt.packet_type == packet.PING and open_.last_ping is not None
    assert closed.queue.empty() and closed.last_ping is None
    assert len(wheel_of(server)) == 0


async def test_a_ping_is_scheduled_again_only_once_answered() -> None:
    server = FakeServer()
    socket = herald_socket(server)
    socket.schedule_ping()
    socket.schedule_ping()  # not answered yet (last_ping None): nothing more
    assert len(wheel_of(server)) == 1


def principal(user_id: int) -> Principal:
    return Principal(sub=str(user_id + 1), email=f"{user_id}@test", role="client")


async def test_tokens_expiring_in_one_second_close_their_sockets_with_one_timer() -> None:
    closed: list[str] = []

    async def close(sid: str) -> None:
        closed.append(sid)

    ids = Identities(None, close, every=0)  # type: ignore[arg-type]
    before = timers()
    soon = time.time() + 0.3
    for i in range(100):
        ids.add(f"s{i}", principal(i), soon)
    ids.add("later", principal(100), time.time() + 3600)
    ids.add("never", principal(101), None)
    ids.remove("s7")  # disconnected first: not closed
    assert timers() - before == 1
    await eventually_async(lambda: len(closed) == 99)
    assert sorted(closed) == sorted(f"s{i}" for i in range(100) if i != 7)
    assert len(ids) == 2  # later, never
    ids.stop()


async def test_a_socket_connected_while_a_check_reads_is_not_closed_by_it() -> None:
    closed: list[str] = []

    async def close(sid: str) -> None:
        closed.append(sid)

    ids = Identities(None, close, every=0)  # type: ignore[arg-type]
    ids.add("old", principal(1), None)
    reading, go = threading.Event(), threading.Event()

    def roles(users: list[int]) -> dict[int, str]:
        reading.set()
        go.wait(10)
        return {user: "client" for user in users}

    ids._roles = roles  # type: ignore[method-assign]
    check = asyncio.create_task(ids.check())
    assert await asyncio.to_thread(reading.wait, 10)
    ids.add("new", principal(2), None)  # its user was checked by its own connect
    go.set()
    assert await check == 0
    assert closed == [] and len(ids) == 2
