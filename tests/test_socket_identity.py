"""An open socket's identity is checked again while it stays open (issue 15, row 4).

A user deleted or whose role changed, and a token that expired, lose their open sockets
within seconds: the transport is closed, the client reconnects with its token and the
connect check refuses it. Against Herald's gateway in this process under a real uvicorn,
re-reading identities every 0.3 s, with real Socket.IO clients.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import socketio
from sqlalchemy import delete, update

from app.gateway.bounds import SocketBounds
from app.gateway.identity import Identities
from app.portal import projects
from app.portal.auth import Principal
from app.portal.models import User
from testkit.clients import SocketClient, token
from testkit.localnode import LocalNode, local_node
from testkit.system import System

pytestmark = pytest.mark.anyio


@pytest.fixture
async def node(pg_system_session: System, redis_url: str) -> AsyncIterator[LocalNode]:
    async with local_node(pg_system_session, redis_url,
                          bounds=SocketBounds(identity_recheck=0.3)) as n:
        yield n


def _user(system: System, role: str) -> int:
    with system.factory() as session, session.begin():
        return projects.create_user(session, email=f"{role}-{uuid.uuid4().hex[:8]}@test",
                                    role=role, name=role).id


async def _connected(url: str, tok: str) -> SocketClient:
    socket = SocketClient(url, tok)
    await socket.connect()
    await socket.wait_count("connected", 1)
    return socket


async def _refused(url: str, tok: str) -> str | None:
    socket = SocketClient(url, tok)
    try:
        await socket.connect()
    except socketio.exceptions.ConnectionError:
        return str(socket.connect_error["data"]["code"])
    await socket.close()
    return None


async def test_a_demoted_admin_loses_its_open_socket(pg_system_session: System,
                                                     node: LocalNode) -> None:
    uid = _user(pg_system_session, "admin")
    tok = token(uid, "admin")
    socket = await _connected(node.url, tok)
    with pg_system_session.factory() as session, session.begin():
        session.execute(update(User).where(User.id == uid).values(role="client"))
    await socket.wait_for(lambda: not socket.sio.connected, timeout=15)
    assert await _refused(node.url, tok) == "token_invalid"


async def test_a_deleted_user_loses_its_open_socket(pg_system_session: System,
                                                    node: LocalNode) -> None:
    uid = _user(pg_system_session, "client")
    tok = token(uid, "client")
    socket = await _connected(node.url, tok)
    keeper = await _connected(node.url, token(_user(pg_system_session, "client"), "client"))
    with pg_system_session.factory() as session, session.begin():
        session.execute(delete(User).where(User.id == uid))
    await socket.wait_for(lambda: not socket.sio.connected, timeout=15)
    assert await _refused(node.url, tok) == "token_invalid"
    assert keeper.sio.connected  # another user's socket stays
    assert (await keeper.call("heartbeat"))["ok"]
    await keeper.close()


async def test_an_expired_token_closes_its_socket(pg_system_session: System,
                                                  node: LocalNode) -> None:
    uid = _user(pg_system_session, "client")
    socket = await _connected(node.url, token(uid, "client", ttl=timedelta(seconds=2)))
    await socket.wait_for(lambda: not socket.sio.connected, timeout=15)
    assert await _refused(node.url, token(uid, "client", ttl=timedelta(seconds=-1))) \
        == "token_expired"
    assert len(node.gateway.identities) == 0


async def test_a_socket_that_connects_while_a_check_reads_the_users_is_not_closed_by_it(
        pg_system_session: System) -> None:
    """A connect storm: sockets keep connecting while a pass reads the users' rows; one
    whose user that read did not include is left for the next pass, not closed."""
    first, second = (_user(pg_system_session, "technician") for _ in range(2))
    closed: list[str] = []

    async def close(sid: str) -> None:
        closed.append(sid)

    identities = Identities(pg_system_session.factory, close, every=0)
    identities.add("first", Principal(str(first), "a@test", "technician"), None)
    release = threading.Event()
    read = identities._roles

    def held(users: list[int]) -> dict[int, str]:
        release.wait(10)
        return read(users)

    identities._roles = held  # type: ignore[method-assign]
    check = asyncio.create_task(identities.check())
    await asyncio.sleep(0.05)
    identities.add("second", Principal(str(second), "b@test", "technician"), None)
    release.set()
    assert await check == 0
    assert closed == []
