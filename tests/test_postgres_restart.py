"""A PostgreSQL restart under writes and relays: 503s while it is down, nothing lost after.

A private PostgreSQL cluster (initdb + pg_ctl as the postgres user, in a temp dir, on a
free port — never the shared one) under a real web node and Celery worker. While it is
stopped, writes answer 503 `unavailable` quickly (connect and pool timeouts, not a hang
and not a 500), socket calls get an error ack `unavailable` on a connection that stays
open, and /readyz names the database as down. Once it is back, the first write
succeeds (pool pre-ping), the relay resumes on its own, and a connected client holds
every committed event in offset order.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from app.core.db import make_engine, make_session_factory
from app.core.migrate import upgrade
from app.outbox.tables import RelayCursor, Stream
from app.portal import projects
from testkit.clients import SocketClient, token
from testkit.eventually import eventually_async
from testkit.postgres import PrivatePostgres
from testkit.processes import WebNode, Worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _heads(factory: object, stream: str) -> tuple[int, int]:
    with factory() as session:  # type: ignore[operator]
        return (int(session.get(Stream, stream).head),
                int(session.get(RelayCursor, stream).dispatched))


async def test_writes_answer_503_while_postgres_is_down_and_nothing_is_lost_after(
    private_pg: PrivatePostgres, tmp_path: Path, redis_url: str,
) -> None:
    upgrade(private_pg.url)
    engine = make_engine(private_pg.url)
    factory = make_session_factory(engine)
    env = {"DATABASE_URL": private_pg.url,
           "HERALD_SOCKETIO_CHANNEL": f"{os.environ['HERALD_SOCKETIO_CHANNEL']}-pgrestart",
           "HERALD_CELERY_QUEUE": f"{os.environ['HERALD_CELERY_QUEUE']}-pgrestart"}
    web, worker = WebNode(env, tmp_path), Worker(env, tmp_path)
    socket: SocketClient | None = None
    # No request may hang: past the timeout, httpx raises and the test fails.
    http = httpx.Client(base_url=web.url, timeout=15)
    try:
        web.start()
        worker.start()
        with factory() as session, session.begin():
            admin = projects.create_user(session, email="root@test", role="admin", name="root")
            client = projects.create_user(session, email="c@test", role="client", name="c")
        http.headers["Authorization"] = f"Bearer {token(admin.id, 'admin')}"
        project = http.post("/api/projects", json={"name": "P", "clientId": client.id,
                                                   "technicianIds": []}).json()["id"]
        stream = f"project-{project}"
        socket = SocketClient(web.url, token(client.id, "client", "c@test"))
        await socket.connect()
        assert (await socket.call("join-project", project))["ok"] is True
        for progress in range(1, 6):
            assert http.patch(f"/api/projects/{project}",
                              json={"progress": progress}).status_code == 200
        await socket.wait_count("project-updated", 5, timeout=20)

        private_pg.stop()
        for progress in range(6, 9):
            down = http.patch(f"/api/projects/{project}", json={"progress": progress})
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "unavailable"
        refused = await socket.call("join-project", project)
        assert refused["ok"] is False and refused["error"]["code"] == "unavailable"
        assert socket.sio.connected
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("down")

        private_pg.start()
        for progress in range(10, 15):  # the first write after the restart succeeds
            up = http.patch(f"/api/projects/{project}", json={"progress": progress})
            assert up.status_code == 200, up.text
        # /readyz's answer is reused for a second: the first may still be the 503
        await eventually_async(lambda: http.get("/readyz").status_code == 200,
                               lambda: http.get("/readyz").text, 20, interval=0.2)
        await socket.wait_count("project-updated", 10, timeout=30)
        # the cursor commits just after the publish
        await eventually_async(lambda: _heads(factory, stream)[1] >= 10,
                               lambda: str(_heads(factory, stream)), 20)
        assert _heads(factory, stream) == (10, 10)  # the three refused writes stored nothing
        await socket.call("heartbeat")
        received = [e.meta["offset"] for e in socket.named("project-updated") if e.meta]
        assert list(dict.fromkeys(received)) == list(range(1, 11))
    finally:
        http.close()
        if socket is not None:
            await socket.close()
        web.stop()
        worker.stop()
        engine.dispose()
