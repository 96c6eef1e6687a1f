"""Live events a replay's gate dropped, sent from a kept page's tail
(app/gateway/replay.py, `Replayer.read_through`; the tail: app/gateway/pagetail.py).

The scene: a project stream with 3 events, its room subscribed on this node. A socket
joins it from offset 3 (its replay keeps the page of the stream after 3, with a tail);
its flush waits, as one behind a slow reader would, while live events come: the `FIRST`
reach its gate and the page's tail, which a socket recovering from 3 then takes in;
`MORE` after them send the joining socket's gate over its bound (it drops them all). Its
flush then reads them through from the kept page's tail, with no database read: more
events than its send queue holds.

Against Herald's gateway in this process (to pause that flush) under a real uvicorn, with
real Socket.IO clients, live events through Redis and the events in PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from app.gateway.bounds import SocketBounds
from app.outbox.publisher import RedisPublisher
from app.outbox.streams import project_stream
from app.outbox.tables import EventRecord
from testkit.clients import SocketClient, token
from testkit.eventually import eventually_async
from testkit.localnode import LocalNode, local_node
from testkit.system import System
from tests.test_catchup import _append, _offsets, _project

pytestmark = pytest.mark.anyio

BOUND = 20  # packets a socket's send queue, and its gates together, may hold
FIRST = 12  # live events its gate holds, and the page's tail, before a reader comes
MORE = 12  # live events after them: past the bound, the joining socket's gate drops all
THROUGH = 3 + FIRST + MORE  # the last offset the gate dropped


@dataclass
class Scene:
    node: LocalNode
    system: System
    user: int
    stream: str
    epoch: str
    other: SocketClient  # in the room since before, its gate long closed
    subject: SocketClient  # the socket that joined from 3
    sid: str
    ack: Any  # its join's ack (CancelledError if its socket was closed instead)
    acked: list[int]  # the offsets it had received when the ack came
    reads: int  # database reads of replay pages during its flush
    publisher: RedisPublisher
    dropped: list[EventRecord]  # the last live events, those past the bound


async def _live(system: System, publisher: RedisPublisher, stream: str, count: int
                ) -> list[EventRecord]:
    """`count` events committed, then published (as the relay does) to the node."""
    events = await asyncio.to_thread(_append, system, stream, count)
    await asyncio.to_thread(publisher.publish, events)
    return events


def _recovering(node: LocalNode, user: int, stream: str, epoch: str) -> SocketClient:
    """A socket of `user` that connects with the position 3 on `stream`."""
    return SocketClient(node.url, token(user, "client"),
                        positions={stream: {"offset": 3, "epoch": epoch}})


@pytest.fixture
async def scene(pg_system_session: System, redis_url: str,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Scene]:
    system = pg_system_session
    user, project = _project(system)
    stream = project_stream(project)
    await asyncio.to_thread(_append, system, stream, 3)
    bounds = SocketBounds(queue_packets=BOUND, drain_timeout=10)
    async with local_node(system, redis_url, bounds=bounds) as node:
        gateway = node.gateway
        pages, ordering = gateway.replayer.pages, gateway.manager.ordering
        pages.keep = 600.0  # the kept page outlives the test: no timing in it
        publisher = RedisPublisher(redis_url, channel=gateway.manager.channel)
        other, subject = (SocketClient(node.url, token(user, "client")) for _ in range(2))
        sockets = [other, subject]
        release, paused = asyncio.Event(), asyncio.Event()
        flush = gateway.replayer.flush

        async def paused_flush(sid: str, room: str, *args: Any) -> int:
            if room == stream and sid == subject.sio.get_sid("/"):
                paused.set()
                await release.wait()
            return await flush(sid, room, *args)

        try:
            # The room subscribed first, so that the page read on the join has a tail.
            await other.connect()
            epoch = (await other.call("join-project", project))["epoch"]
            await eventually_async(lambda: gateway.manager.subscriptions.is_live(stream),
                                   "the room was not subscribed")
            await subject.connect()
            sid = subject.sio.get_sid("/")
            monkeypatch.setattr(gateway.replayer, "flush", paused_flush)
            joining = asyncio.create_task(subject.call(
                "join-project", {"projectId": project,
                                 "position": {"offset": 3, "epoch": epoch}}))
            await asyncio.wait_for(paused.wait(), 10)
            page = pages._kept[(stream, 3, epoch)]
            assert page.tail is not None and page.tail.open, "the join kept no tail"

            await _live(system, publisher, stream, FIRST)  # held by its gate, in the tail
            await other.wait_for(lambda: len(_offsets(other)) == FIRST)
            late = _recovering(node, user, stream, epoch)
            sockets.append(late)
            await late.connect()  # its replay takes the tail in (from the kept page)
            await late.wait_for(lambda: _offsets(late) == list(range(4, 4 + FIRST)))
            overflows = ordering.overflows
            dropped = await _live(system, publisher, stream, MORE)  # over the bound
            await other.wait_for(lambda: len(_offsets(other)) == FIRST + MORE)
            assert ordering.overflows > overflows and ordering.is_gated(sid, stream)

            reads = pages.reads
            release.set()
            await eventually_async(lambda: joining.done() or not subject.sio.connected,
                                   "the join neither ended nor failed")
            joining.cancel()  # if the socket was closed: no ack will come
            ack: Any = (await asyncio.gather(joining, return_exceptions=True))[0]
            yield Scene(node, system, user, stream, epoch, other, subject, sid, ack,
                        _offsets(subject), pages.reads - reads, publisher, dropped)
        finally:
            release.set()
            publisher.close()
            for socket in sockets:
                await socket.close()


async def test_dropped_live_events_come_from_a_kept_pages_tail_once_in_order(
        scene: Scene) -> None:
    await asyncio.sleep(0.2)  # anything sent twice would have come by now
    assert _offsets(scene.subject) == list(range(4, THROUGH + 1))
    assert scene.reads == 0  # from the kept page and its tail, not the event table


async def test_a_join_acks_after_the_tail_it_read_through(scene: Scene) -> None:
    """The ack says the join started at the head 3; what followed was sent before it."""
    assert isinstance(scene.ack, dict) and scene.ack["ok"], scene.ack
    assert scene.ack["offset"] == 3 and scene.ack["recovered"]
    assert scene.acked == list(range(4, THROUGH + 1))


async def test_a_tail_longer_than_the_send_queue_is_sent_at_the_pace_the_socket_reads(
        scene: Scene) -> None:
    """More events than the socket's send queue holds, sent as it reads them: its
    transport is not closed for not reading (it reads)."""
    assert isinstance(scene.ack, dict) and scene.ack["ok"], scene.ack
    assert scene.subject.sio.connected
    assert scene.node.gateway.sio.overflows == 0


async def test_the_socket_goes_live_after_the_tails_last_offset(scene: Scene) -> None:
    """Its gate closes at the tail's last offset, the room's mark there: the relay
    publishing the last events again (at least once) sends the socket none of them, and
    the next event reaches it once."""
    ordering = scene.node.gateway.manager.ordering
    assert not ordering.is_gated(scene.sid, scene.stream)
    assert ordering.mark(scene.stream) == THROUGH
    await asyncio.to_thread(scene.publisher.publish, scene.dropped)  # again
    await _live(scene.system, scene.publisher, scene.stream, 1)
    other = scene.other
    await other.wait_for(lambda: _offsets(other)[-1] == THROUGH + 1)  # after the repeats
    assert _offsets(scene.subject) == list(range(4, THROUGH + 2))


async def test_a_replay_from_a_kept_pages_tail_longer_than_the_send_queue_is_paced(
        scene: Scene) -> None:
    """A socket recovering from 3 now gets the kept page and its tail (4 to the last
    offset, more than its send queue holds) as it reads them: once, in order, and its
    transport is not closed (the tail send of a replay's history, as of read_through's)."""
    gateway = scene.node.gateway
    reads = gateway.replayer.pages.reads
    late = _recovering(scene.node, scene.user, scene.stream, scene.epoch)
    try:
        await late.connect()
        await late.wait_for(lambda: len(_offsets(late)) >= THROUGH - 3 or not
                            late.sio.connected)
        assert _offsets(late) == list(range(4, THROUGH + 1)) and late.sio.connected
        assert gateway.replayer.pages.reads == reads and gateway.sio.overflows == 0
    finally:
        await late.close()
