"""Herald on a Redis Cluster and on Redis Sentinel (issue 16.4), with real processes.

A web node and a Celery worker are started with `REDIS_URL` naming a local 3-master
cluster (each master with a replica; Celery's broker on RabbitMQ, since Celery cannot
use a cluster) or a Sentinel set (Celery's broker through the same sentinels). Real
Socket.IO clients receive PATCHes live and replay from a position; then the master that
holds their streams' channels is killed while events keep coming, and every client
still gets every event, with no silent disconnect.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import socketio
from redis.exceptions import RedisClusterException

from app.core.db import make_engine, make_session_factory
from app.portal import projects
from testkit.clients import Api, SocketClient, token
from testkit.databases import drop_pg_database, migrated_pg_database, require_pg
from testkit.eventually import eventually_async
from testkit.processes import WebNode, Worker, stop_all
from testkit.redis_cluster import SERVICE, LocalCluster, LocalSentinel

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
CLIENTS = 3
BEFORE_KILL = 2.0  # seconds of load before the master is killed
# and after it, once the failover is over: that many more PATCHes per project, so that later
# events must arrive live too
AFTER_FAILOVER = 15


@dataclass
class Deployment:
    web: WebNode
    worker: Worker
    api: Api
    factory: Any


@contextmanager
def deployment(tmp: Path, name: str, env: dict[str, str]) -> Iterator[Deployment]:
    require_pg()
    url = migrated_pg_database(name)
    engine = make_engine(url)
    full = {"DATABASE_URL": url, "HERALD_RATE_WRITES": "100000/minute", **env}
    web, worker = WebNode(full, tmp), Worker(full, tmp)
    try:
        factory = make_session_factory(engine)
        web.spawn()
        worker.spawn()
        web.wait_ready()
        worker.wait_ready()
        with factory() as session, session.begin():
            admin = projects.create_user(session, email="root@test", role="admin", name="root")
        api = Api(web.url, token(admin.id, "admin", "root@test"))
        yield Deployment(web, worker, api, factory)
        api.close()
    finally:
        stop_all([web, worker])  # side by side: a worker's warm shutdown takes seconds
        engine.dispose()
        drop_pg_database(url)


# One deployment per topology for the module (each test makes its own users, projects and
# clients); the tests that kill a master come last in the file, after the others on it.
@pytest.fixture(scope="module")
def on_cluster(redis_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Deployment]:
    redis_cluster.wait_healthy()
    with deployment(tmp_path_factory.mktemp("on-cluster"), "_cluster", {
            "REDIS_URL": redis_cluster.url, "HERALD_BROKER_URL": RABBITMQ}) as system:
        yield system


@pytest.fixture(scope="module")
def on_sentinel(redis_sentinel: LocalSentinel, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("on-sentinel"), "_sentinel",
                    {"REDIS_URL": redis_sentinel.url}) as system:
        yield system


class Follower:
    """A python-socketio client of one project, reconnecting with its position."""

    def __init__(self, url: str, user_token: str, project: int) -> None:
        self.url = url
        self.stream = f"project-{project}"
        self.project = project
        self.offsets: list[int] = []
        self.position: dict[str, Any] = {}
        self.disconnects: list[Any] = []
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2,
                                        reconnection_delay_max=1)
        self.token = user_token
        self.sio.on("project-updated", self._updated)
        self.sio.on("disconnect", self._disconnect)

    async def _updated(self, _payload: Any, meta: dict[str, Any]) -> None:
        if meta["stream"] == self.stream:
            self.offsets.append(meta["offset"])
            self.position = {"offset": meta["offset"], "epoch": meta["epoch"]}

    async def _disconnect(self, reason: Any = None) -> None:
        self.disconnects.append(reason)

    async def connect(self, positions: bool = True) -> None:
        await self.sio.connect(self.url, transports=["websocket"], wait_timeout=10, auth=lambda: {
            "token": self.token,
            "positions": {self.stream: dict(self.position or {"offset": 0})}})

    def seen(self) -> list[int]:
        return list(dict.fromkeys(self.offsets))


async def followers(system: Deployment, count: int) -> list[Follower]:
    out = []
    for i in range(count):
        client_id, client_token = system.api.user("client", f"c{i}-{time.monotonic_ns()}@t")
        follower = Follower(system.web.url, client_token, system.api.project(client_id))
        await follower.connect()
        out.append(follower)
    return out


async def end_to_end_and_replay(system: Deployment) -> None:
    [live] = await followers(system, 1)
    try:
        for i in range(1, 4):
            system.api.ok("PATCH", f"/api/projects/{live.project}", json={"progress": i})
        await eventually_async(lambda: live.seen() == [1, 2, 3], lambda: f"live: {live.offsets}")
        late = Follower(system.web.url, live.token, live.project)
        late.position = {"offset": 1, "epoch": live.position["epoch"]}
        await late.connect()
        await eventually_async(lambda: late.seen() == [2, 3], lambda: f"replay: {late.offsets}")
        await late.sio.disconnect()
        # the operators' side works there too: readiness, counters, heartbeats, rate
        assert system.api.request("GET", "/readyz").status_code == 200
        metrics = system.api.request("GET", "/metrics")
        assert metrics.status_code == 200 and "herald_events_published" in metrics.text
        await eventually_async(
            lambda: (n := system.api.request("GET", "/api/admin/nodes")).status_code == 200
            and n.json()["webNodes"] and n.json()["workers"], "no heartbeats")
        rate = system.api.ok("GET", "/api/admin/outbox/rate")
        await eventually_async(
            lambda: system.api.ok("GET", "/api/admin/outbox/rate")["published"] >= 3,
            lambda: f"relay rate not counted: {rate}")
    finally:
        await live.sio.disconnect()


async def test_cluster_end_to_end_and_replay(on_cluster: Deployment) -> None:
    await end_to_end_and_replay(on_cluster)


async def test_sentinel_end_to_end_and_replay(on_sentinel: Deployment) -> None:
    await end_to_end_and_replay(on_sentinel)


async def test_cluster_typing_and_a_plain_emit_reach_another_web_node(
        on_cluster: Deployment, redis_cluster: LocalCluster, tmp_path: Path) -> None:
    """Typing goes by SPUBLISH on the ticket's channel (on its slot's master) to a socket on
    another node; a service's plain python-socketio emit, given any node's redis:// URL,
    reaches both nodes through the shared channel."""
    second = WebNode(on_cluster.web.env, tmp_path)
    second.start()
    client_id, client_tok = on_cluster.api.user("client")
    project = on_cluster.api.project(client_id)
    ticket = on_cluster.api.ticket(project)
    typist = SocketClient(on_cluster.web.url, client_tok)
    reader = SocketClient(second.url, client_tok)
    node = redis_cluster.servers[-1].port
    emitter = socketio.AsyncRedisManager(f"redis://127.0.0.1:{node}/0",
                                         channel=os.environ["HERALD_SOCKETIO_CHANNEL"],
                                         write_only=True)
    try:
        for socket in (typist, reader):
            await socket.connect()
            assert (await socket.call("join-ticket", ticket))["ok"]
        assert (await typist.call("typing-start", {"ticketId": ticket}))["ok"]
        [typing] = await reader.wait_count("user-typing", 1)
        assert typing.payload["isTyping"] is True
        await emitter.emit("announcement", {"text": "hi"}, room=f"ticket-{ticket}")
        for socket in (typist, reader):
            await socket.wait_count("announcement", 1)
    finally:
        for socket in (typist, reader):
            await socket.close()
        second.stop()


async def under_load_while(system: Deployment, clients: list[Follower], kill: Any,
                           failed_over: Callable[[], bool]) -> None:
    """PATCH every client's project, `kill()` a master meanwhile and go on until
    `failed_over()` and AFTER_FAILOVER more PATCHes per project; then every client has
    every offset, in order of first arrival, and is connected."""
    sent: dict[int, int] = {c.project: 0 for c in clients}
    stop = threading.Event()

    def load() -> None:
        api = Api(system.web.url, system.api.admin)
        try:
            while not stop.is_set():
                for project in sent:
                    response = api.request("PATCH", f"/api/projects/{project}",
                                           json={"progress": sent[project] % 100})
                    if response.status_code == 200:
                        sent[project] += 1
                time.sleep(0.02)
        finally:
            api.close()

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        await asyncio.sleep(BEFORE_KILL)
        await asyncio.to_thread(kill)
        await eventually_async(lambda: asyncio.to_thread(failed_over),
                               "no failover after the master was killed", timeout=30,
                               interval=0.2)
        after = dict(sent)
        await eventually_async(
            lambda: all(sent[p] >= after[p] + AFTER_FAILOVER for p in sent),
            lambda: f"PATCHes after the failover: {after} -> {sent}", timeout=30)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
    assert all(sent.values()), sent
    for client in clients:
        await eventually_async(
            lambda c=client: c.seen() == list(range(1, sent[c.project] + 1)),
            lambda c=client: f"{c.stream}: sent {sent[c.project]}, got {c.seen()[-5:]} "
                             f"({len(c.seen())}), disconnects {c.disconnects}", timeout=45)
        assert client.sio.connected, client.disconnects


async def test_killing_a_cluster_master_under_load_loses_nothing(
        on_cluster: Deployment, redis_cluster: LocalCluster) -> None:
    clients = await followers(on_cluster, CLIENTS)
    try:
        victim = redis_cluster.master_of(clients[0].stream)

        def failed_over() -> bool:  # the victim's replica serves its slots, the cluster is ok
            try:
                redis_cluster.wait_healthy(timeout=0)
                return redis_cluster.master_of(clients[0].stream) is not victim
            except (AssertionError, redis_lib.RedisError, RedisClusterException):
                return False

        await under_load_while(on_cluster, clients, victim.kill, failed_over)
    finally:
        for client in clients:
            await client.sio.disconnect()


async def test_killing_the_sentinel_master_under_load_loses_nothing(
        on_sentinel: Deployment, redis_sentinel: LocalSentinel) -> None:
    clients = await followers(on_sentinel, CLIENTS)
    try:
        victim = redis_sentinel.current_master()

        def failed_over() -> bool:  # the sentinel names the promoted replica
            try:
                return redis_sentinel.current_master() is not victim
            except redis_lib.RedisError:
                return False

        await under_load_while(on_sentinel, clients, victim.kill, failed_over)
    finally:
        for client in clients:
            await client.sio.disconnect()


def _room_listeners(port: int) -> int:
    """Connections with room channels subscribed (SSUBSCRIBE) on the Redis at `port`."""
    with redis_lib.Redis(port=port) as server:
        return sum(1 for c in server.client_list() if int(c.get("ssub", 0)) > 0)


@pytest.fixture
def own_sentinel(tmp_path: Path) -> Iterator[LocalSentinel]:
    """A Sentinel set of this test alone (its master changes for good)."""
    sentinel = LocalSentinel(tmp_path / "redis-sentinel")
    try:
        sentinel.start()
        yield sentinel
    finally:
        sentinel.stop()


def _failover(sentinels: redis_lib.Redis) -> bool:
    """SENTINEL FAILOVER; False while the sentinel does not count the replica as one to
    promote (NOGOODSLAVE: its view of the replica, from an INFO it sends every 10 s, may
    predate the replica's sync or its last ping reply be a few seconds old on a loaded
    machine)."""
    try:
        sentinels.execute_command("SENTINEL FAILOVER", SERVICE)
    except redis_lib.ResponseError as exc:
        if "NOGOODSLAVE" not in str(exc):
            raise
        return False
    return True


@pytest.mark.parametrize("left_behind", ["pubsub", "normal"])
async def test_a_connection_left_on_a_replaced_sentinel_master_loses_nothing(
        own_sentinel: LocalSentinel, tmp_path: Path, left_behind: str) -> None:
    """The sentinels promote the replica while the old master stays up as a master (what a
    killed master restarted at once is, until they reconfigure it seconds later). One kind
    of connection on it is then dropped (a worker restarting, a network blip), so it
    reopens on the new master, while the other, `left_behind`, never fails: the web node's
    listener (pubsub) or the relay's publisher (normal). The listener moves to the new
    master and catches up, the relay's next batch goes there: a bare client (no gap
    repair, no reconnect) gets every event in order."""
    moved = {"pubsub": "normal", "normal": "pubsub"}[left_behind]
    with deployment(tmp_path, "_stale_master", {"REDIS_URL": own_sentinel.url}) as system:
        [client] = await followers(system, 1)
        try:
            system.api.ok("PATCH", f"/api/projects/{client.project}", json={"progress": 1})
            await eventually_async(lambda: client.seen() == [1], lambda: f"{client.offsets}")
            old = own_sentinel.current_master()
            with redis_lib.Redis(port=own_sentinel.sentinel_port) as sentinels:
                await eventually_async(lambda: _failover(sentinels),
                                       "the sentinel found no replica to promote", timeout=30)
                # once the failover is over (until then SENTINEL MASTERS names the old one)
                await eventually_async(
                    lambda: int(sentinels.sentinel_master(SERVICE)["port"]) != old.port,
                    "the sentinel did not promote the replica", timeout=20)
                # forget the old server (the new master has no replica yet): the sentinel then
                # never turns it into a replica, and it stays a master however slow the run
                sentinels.execute_command("SENTINEL RESET", SERVICE)
            with redis_lib.Redis(port=old.port) as stale:
                stale.execute_command("CLIENT KILL TYPE", moved)
            if moved == "pubsub":  # the listener is on the new master before the events
                new = own_sentinel.current_master()
                await eventually_async(lambda: _room_listeners(new.port) > 0,
                                       "the listener did not move to the new master")
            for i in range(2, 7):
                system.api.ok("PATCH", f"/api/projects/{client.project}", json={"progress": i})
            await eventually_async(lambda: client.seen() == [1, 2, 3, 4, 5, 6],
                                   lambda: f"got {client.offsets}", timeout=20)
            # ...while the old server was still a master: not thanks to the sentinels
            # reconfiguring it (and closing its connections) seconds later
            with redis_lib.Redis(port=old.port) as stale:
                assert stale.execute_command("ROLE")[0] == b"master"
            assert client.disconnects == []
        finally:
            await client.sio.disconnect()
