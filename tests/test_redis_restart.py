"""After a Redis restart, clients keep receiving, with no action of their own.

The issue's reproduction, with the official Node socket.io-client and with
python-socketio's AsyncClient: one client with automatic reconnection on, joined to a
project; the Socket.IO Redis (a private redis-server) restarted three times, a PATCH
after each. The web node catches its rooms up from the event table when its
subscription comes back, so the client receives all three, in order, without even
reconnecting (before: a Socket.IO disconnect, final for both clients, and nothing more).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from app.core.db import make_engine, make_session_factory
from app.core.migrate import upgrade
from app.portal import projects
from testkit.clients import Api, token
from testkit.eventually import eventually_async
from testkit.ops import scrape
from testkit.postgres import PrivatePostgres
from testkit.private import private_system
from testkit.processes import ROOT, WebNode, Worker
from testkit.redis import PrivateRedis
from testkit.testrun import CI

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
NODE_DIR = ROOT / "tests" / "node"
RESTARTS = 3


@dataclass
class Restartable:
    """Herald (web node + worker) whose Socket.IO Redis the test restarts."""

    redis: PrivateRedis
    web: WebNode
    worker: Worker
    api: Api

    def restart_redis(self) -> None:
        self.redis.restart_under(self.web)


@pytest.fixture
def restartable(tmp_path: Path, redis_url: str) -> Iterator[Restartable]:
    queue = f"{os.environ['HERALD_CELERY_QUEUE']}-restart"
    with private_system(tmp_path, "_restart", env={"HERALD_CELERY_QUEUE": queue}) as system:
        yield Restartable(system.redis, system.web, system.worker, system.api)


def first_seen(offsets: list[int]) -> list[int]:
    """Offsets in arrival order, duplicates dropped (as a client de-duplicates)."""
    return list(dict.fromkeys(offsets))


@dataclass
class NodeFollower:
    """tests/node/follow.js: the official socket.io-client, one JSON line per thing."""

    url: str
    token: str
    project: int
    lines: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        node = shutil.which("node")
        if node is None or not (NODE_DIR / "node_modules" / "socket.io-client").exists():
            message = "node or tests/node/node_modules missing (make test runs npm ci)"
            if CI:
                pytest.fail(message)
            pytest.skip(message)
        self.proc = subprocess.Popen([node, str(NODE_DIR / "follow.js"), self.url, self.token,
                                      str(self.project)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"kind": "output", "text": line})

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line["kind"] == kind]

    def offsets(self, stream: str) -> list[int]:
        return [line["args"][1]["offset"] for line in self.kinds("event")
                if line["name"] == "project-updated" and line["args"][1]["stream"] == stream]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


async def test_official_node_client_receives_every_patch_across_three_redis_restarts(
    restartable: Restartable,
) -> None:
    api = restartable.api
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    follower = NodeFollower(restartable.web.url, client_token, project)
    try:
        await eventually_async(lambda: follower.kinds("joined"), f"no join: {follower.lines}")
        assert follower.kinds("joined")[0]["ack"]["ok"] is True
        for i in range(1, RESTARTS + 1):
            restartable.restart_redis()
            api.ok("PATCH", f"/api/projects/{project}", json={"progress": 10 * i})
            await eventually_async(lambda n=i: len(set(follower.offsets(stream))) >= n,
                                   f"patch {i} not received: {follower.lines}")
        assert first_seen(follower.offsets(stream)) == [1, 2, 3]
        # no action from the client: it was never even disconnected
        assert follower.kinds("disconnect") == [], follower.lines
    finally:
        follower.close()


async def test_python_socketio_client_receives_every_patch_across_three_redis_restarts(
    restartable: Restartable,
) -> None:
    api = restartable.api
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2,
                               reconnection_delay_max=1)
    offsets: list[int] = []
    disconnects: list[Any] = []
    joined: list[Any] = []

    @sio.event  # type: ignore[misc]
    async def connect() -> None:
        sio.start_background_task(rejoin)

    async def rejoin() -> None:
        joined.append(await sio.call("join-project", project, timeout=10))

    @sio.event  # type: ignore[misc]
    async def disconnect(reason: Any = None) -> None:
        disconnects.append(reason)

    @sio.on("project-updated")  # type: ignore[misc]
    async def updated(_payload: Any, meta: dict[str, Any]) -> None:
        if meta["stream"] == stream:
            offsets.append(meta["offset"])

    await sio.connect(restartable.web.url, auth=lambda: {"token": client_token},
                      transports=["websocket"], wait_timeout=10)
    try:
        await eventually_async(lambda: joined, "no join")
        assert joined[0]["ok"] is True
        for i in range(1, RESTARTS + 1):
            await asyncio.to_thread(restartable.restart_redis)
            api.ok("PATCH", f"/api/projects/{project}", json={"progress": 10 * i})
            await eventually_async(lambda n=i: len(set(offsets)) >= n, f"patch {i} not received")
        assert first_seen(offsets) == [1, 2, 3]
        assert disconnects == []
    finally:
        await sio.disconnect()


def refused_unavailable(url: str) -> float:
    """Socket.IO connections the node refused with `unavailable` (database down)."""
    samples = scrape(httpx.get(f"{url}/metrics", timeout=10).text)
    return sum(value for (name, labels), value in samples.items()
               if name == "herald_connections_refused_total" and ("code", "unavailable") in labels)


async def test_a_room_that_cannot_be_caught_up_closes_transports_and_clients_recover(
    private_pg: PrivatePostgres, tmp_path: Path, redis_url: str,
) -> None:
    """The fallback: the database is down when the subscription comes back, so the node
    cannot read what its rooms missed. It closes those transports (not a Socket.IO
    disconnect), and python-socketio's client retries until the database is back, then
    recovers from its positions."""
    private = PrivateRedis(tmp_path)
    private.start()
    upgrade(private_pg.url)
    engine = make_engine(private_pg.url)
    factory = make_session_factory(engine)
    env = {"DATABASE_URL": private_pg.url, "SOCKETIO_REDIS_URL": private.url,
           "HERALD_CELERY_QUEUE": f"{os.environ['HERALD_CELERY_QUEUE']}-fallback"}
    web, worker = WebNode(env, tmp_path), Worker(env, tmp_path)
    sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2,
                               reconnection_delay_max=1)
    try:
        web.start()
        worker.start()
        with factory() as session, session.begin():
            admin = projects.create_user(session, email="root@test", role="admin", name="root")
            client = projects.create_user(session, email="c@test", role="client", name="c")
        api = Api(web.url, token(admin.id, "admin", "root@test"))
        project = api.project(client.id)
        stream = f"project-{project}"
        offsets: list[int] = []
        reasons: list[Any] = []
        position: dict[str, Any] = {"offset": 0}

        @sio.event  # type: ignore[misc]
        async def disconnect(reason: Any = None) -> None:
            reasons.append(reason)

        @sio.on("project-updated")  # type: ignore[misc]
        async def updated(_payload: Any, meta: dict[str, Any]) -> None:
            offsets.append(meta["offset"])
            position.update(offset=meta["offset"], epoch=meta["epoch"])

        await sio.connect(web.url, transports=["websocket"], wait_timeout=10,
                          auth=lambda: {"token": token(client.id, "client", "c@test"),
                                        "positions": {stream: dict(position)}})
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 1})
        await eventually_async(lambda: offsets == [1], "first event not received")

        await asyncio.to_thread(private_pg.stop)
        # resubscribed, the node's catch-up cannot read
        await asyncio.to_thread(private.restart_under, web)
        await eventually_async(lambda: reasons, "the transport was not closed")
        assert reasons[0] == sio.reason.TRANSPORT_ERROR, reasons  # not SERVER_DISCONNECT
        # It retries meanwhile, and the node refuses it until the database is back.
        await eventually_async(lambda: asyncio.to_thread(refused_unavailable, web.url),
                               "the client's retries never reached the node", 20, interval=0.2)
        await asyncio.to_thread(private_pg.start)
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 2})
        await eventually_async(lambda: 2 in offsets, f"not recovered: {offsets} {reasons}")
        assert first_seen(offsets) == [1, 2]
        assert sio.connected
        api.close()
    finally:
        await sio.disconnect()
        web.stop()
        worker.stop()
        private.stop()
        engine.dispose()
