"""What a connect may cost: parallel connects within the per-user cap, and no stream rows
for ids that do not exist (issue 15, rows 10 and 15). Real Socket.IO clients against
Herald's gateway in this process, under a real uvicorn.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import socketio
from sqlalchemy import select

from app.outbox.tables import Stream
from app.portal import projects
from testkit.clients import SocketClient, token
from testkit.localnode import LocalNode, local_node
from testkit.system import System

pytestmark = pytest.mark.anyio
CAP = 5


@pytest.fixture
async def node(pg_system_session: System, redis_url: str) -> AsyncIterator[LocalNode]:
    async with local_node(pg_system_session, redis_url, max_connections=CAP) as n:
        yield n


def _user(system: System, role: str) -> int:
    with system.factory() as session, session.begin():
        return projects.create_user(session, email=f"{role}-{uuid.uuid4().hex[:8]}@test",
                                    role=role, name=role).id


async def test_parallel_connects_of_one_user_stay_within_the_cap(
    pg_system_session: System, node: LocalNode
) -> None:
    tok = token(_user(pg_system_session, "client"), "client")
    sockets = [SocketClient(node.url, tok) for _ in range(4 * CAP)]
    outcomes = await asyncio.gather(*(s.connect() for s in sockets), return_exceptions=True)
    try:
        connected = [s for s in sockets if s.sio.connected]
        refused = [s.connect_error for s, o in zip(sockets, outcomes, strict=True)
                   if isinstance(o, socketio.exceptions.ConnectionError)]
        assert 1 <= len(connected) <= CAP, len(connected)
        assert len(connected) + len(refused) == len(sockets)
        assert {r["data"]["code"] for r in refused} == {"rate_limited"}
    finally:
        await asyncio.gather(*(s.close() for s in sockets))
    assert node.gateway._connecting == {}


async def test_an_admin_connect_creates_no_stream_for_ids_that_do_not_exist(
    pg_system_session: System, node: LocalNode
) -> None:
    absent = ["project-2000000001", "ticket-2000000002", "user-2000000003"]
    socket = SocketClient(node.url, token(_user(pg_system_session, "admin"), "admin"),
                          positions={name: {"offset": 0} for name in absent})
    await socket.connect()
    try:
        connected = (await socket.wait_count("connected", 1))[0].payload
    finally:
        await socket.close()
    assert connected["recovered"] == dict.fromkeys(absent, False)
    with pg_system_session.factory() as session:
        rows = session.scalars(select(Stream.name).where(Stream.name.in_(absent))).all()
    assert rows == []
