"""A room's catch-up after a lost subscription (app/gateway/catchup.py): each socket's
gate is flushed on its own, so a socket whose flush waits (a slow reader being paced)
does not hold back the others' live events, and each still gets every event in order.

Against Herald's gateway in this process (to pause one socket's flush) under a real
uvicorn, with real Socket.IO clients and live events through Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from app.outbox.publisher import RedisPublisher
from app.outbox.streams import project_stream
from app.outbox.tables import EventRecord
from app.outbox.writer import append_rows
from app.portal import projects
from testkit.clients import SocketClient, token
from testkit.eventually import eventually_async
from testkit.localnode import local_node
from testkit.system import System

pytestmark = pytest.mark.anyio


def _project(system: System) -> tuple[int, int]:
    """(client id, project id) of a new project."""
    tag = uuid.uuid4().hex[:8]
    with system.factory() as session, session.begin():
        client = projects.create_user(session, email=f"cu-{tag}@test", role="client", name="c")
        project = projects.create_project(session, name="P", client_id=client.id,
                                          technician_ids=[])
        return client.id, project.id


def _append(system: System, stream: str, count: int) -> list[EventRecord]:
    with system.factory() as session, session.begin():
        return append_rows(session, [(stream, "note", {"i": i}) for i in range(count)])


def _offsets(socket: SocketClient) -> list[int]:
    return [n.meta["offset"] for n in socket.named("note") if n.meta]


async def test_a_socket_whose_flush_waits_does_not_hold_back_the_others_in_its_room(
    pg_system_session: System, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, project = _project(pg_system_session)
    stream = project_stream(project)
    async with local_node(pg_system_session, redis_url) as node:
        gateway = node.gateway
        ordering = gateway.manager.ordering
        slow, quick = (SocketClient(node.url, token(user, "client")) for _ in range(2))
        publisher = RedisPublisher(redis_url, channel=gateway.manager.channel)
        release = asyncio.Event()
        try:
            for socket in (slow, quick):  # the slow one first: flushed first in turn
                await socket.connect()
                assert (await socket.call("join-project", project))["ok"]
            slow_sid = slow.sio.get_sid("/")
            flush = gateway.replayer.flush

            async def paused_flush(sid: str, *args: Any) -> int:
                if sid == slow_sid:
                    await release.wait()
                return await flush(sid, *args)

            monkeypatch.setattr(gateway.replayer, "flush", paused_flush)
            # Events 1 and 2 committed while the node was not subscribed: never published.
            await asyncio.to_thread(_append, pg_system_session, stream, 2)
            catching = asyncio.create_task(gateway.catchup.room(stream))
            await eventually_async(lambda: _offsets(quick) == [1, 2] == _offsets(slow),
                                   lambda: f"not caught up: {_offsets(quick)} {_offsets(slow)}")
            # Event 3, live while the slow socket's flush waits: the quick one gets it now.
            live = await asyncio.to_thread(_append, pg_system_session, stream, 1)
            await asyncio.to_thread(publisher.publish, live)
            await eventually_async(lambda: _offsets(quick) == [1, 2, 3],
                                   lambda: f"held back behind the slow socket: {_offsets(quick)}")
            assert _offsets(slow) == [1, 2] and ordering.is_gated(slow_sid, stream)
            release.set()
            await catching
            await eventually_async(lambda: _offsets(slow) == [1, 2, 3],
                                   lambda: f"slow socket: {_offsets(slow)}")
            assert not ordering.is_gated(slow_sid, stream)
        finally:
            release.set()
            publisher.close()
            for socket in (slow, quick):
                await socket.close()
