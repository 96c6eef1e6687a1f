"""engine.io sessions at their edges: a long-poll to a session closed but not yet swept."""

from __future__ import annotations

import httpx
import pytest
import socketio

from app.gateway.sio import HeraldServer

pytestmark = pytest.mark.anyio


async def _polling_session(client: httpx.AsyncClient) -> str:
    answer = await client.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
    assert answer.status_code == 200
    sid: str = httpx.Response(200, content=answer.content[1:]).json()["sid"]
    return sid


async def test_a_post_to_a_closed_session_not_yet_swept_is_answered_400_not_500() -> None:
    sio = HeraldServer(async_mode="asgi", logger=False, engineio_logger=False)
    app = socketio.ASGIApp(sio)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        sid = await _polling_session(client)
        sio.eio.sockets[sid].closed = True  # closed (e.g. a ping timeout), not yet swept
        answer = await client.post(
            "/socket.io/", params={"EIO": "4", "transport": "polling", "sid": sid},
            content=b"40")
    assert answer.status_code == 400
    assert sid not in sio.eio.sockets

