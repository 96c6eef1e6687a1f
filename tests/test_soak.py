"""Soak: steady writes while workers, web nodes and Redis are SIGKILLed at random.

Real everything: PostgreSQL, a private redis-server (Celery broker and Socket.IO queue),
two uvicorn web nodes on fixed ports, two Celery workers (no beat), and three kinds of
resuming clients: Herald's own clients — the Python `herald_client.Subscriber` and the
JavaScript `herald-client` in a Node process — and bare python-socketio clients that speak
the protocol by hand (automatic reconnection, an `auth` callable sending their current
positions, positions tracked from `connected.positions`, event meta and join acks). A
supervisor restarts whatever exits, as systemd or Kubernetes would. At the end every
client holds every committed event of its streams in offset order: exactly once from the
client libraries, once de-duplicated by (stream, offset) from the bare clients.
Bounded: HERALD_SOAK_SECONDS (default 20) of chaos, a kill every 1.5-3 s: Redis first, then
a worker and a web node in a random order (each kind at least once in every run, however
short or slow), then at random.

The same soak runs on each Redis topology (issue 16): one Redis; a Redis Cluster of three
masters with a replica each (a random master is killed, its replica takes over, the killed
server comes back as a replica; Celery's broker on RabbitMQ, since Celery cannot use a
cluster); a Sentinel set (the current master is killed, the sentinel promotes the
replica). Those two get HERALD_SOAK_TOPOLOGY_SECONDS (default 15) of chaos each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import redis as redis_lib
import socketio
from herald_client import MemoryStore, Subscriber
from sqlalchemy import select

from app.core.db import make_engine, make_session_factory
from app.outbox.tables import RelayCursor, Stream
from app.portal import projects
from testkit.clients import token
from testkit.databases import drop_pg_database, migrated_pg_database, require_pg
from testkit.eventually import eventually, eventually_async
from testkit.processes import Process, WebNode, Worker, free_port, start_all, stop_all
from testkit.redis import PrivateRedis
from testkit.redis_cluster import LocalCluster, LocalSentinel
from testkit.testrun import CI

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
SOAK_SECONDS = float(os.environ.get("HERALD_SOAK_SECONDS", "20"))
TOPOLOGY_SOAK_SECONDS = float(os.environ.get("HERALD_SOAK_TOPOLOGY_SECONDS", "15"))
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
CLIENTS = 6  # by kind, in turn: bare protocol, herald_client (Python), herald-client (Node)
KINDS = ("bare", "python", "node")
NODE_FOLLOW = Path(__file__).parent / "node" / "herald_follow.mjs"


class SoakRedis(Protocol):
    """The Redis side of a soak, whatever its topology: what to kill and what to revive."""

    name: str
    env: dict[str, str]

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self, rng: random.Random) -> None: ...
    def revive(self) -> bool:
        """Start whatever is down; True if something was."""
        ...


class OneRedis:
    name = "redis"

    def __init__(self, directory: Path) -> None:
        self.redis = PrivateRedis(directory)
        self.env = {"REDIS_URL": self.redis.url, "SOCKETIO_REDIS_URL": self.redis.url}

    def start(self) -> None:
        self.redis.start()

    def stop(self) -> None:
        self.redis.stop()

    def kill(self, rng: random.Random) -> None:
        if self.redis.proc is not None:
            self.redis.proc.kill()
            self.redis.proc.wait(10)

    def revive(self) -> bool:
        if self.redis.proc is not None and self.redis.proc.poll() is None:
            return False
        self.redis.start()
        return True


class Servers:
    """Kill and revive for the servers of a LocalCluster or a LocalSentinel."""

    servers: list[Any]

    def masters(self) -> list[Any]:
        out = []
        for server in self.alive():
            with contextlib.suppress(redis_lib.RedisError), redis_lib.Redis(
                    port=server.port, socket_timeout=1) as client:
                if client.execute_command("ROLE")[0] in (b"master", "master"):
                    out.append(server)
        return out

    def alive(self) -> list[Any]:
        return [s for s in self.servers if s.proc is not None and s.proc.poll() is None]

    def kill(self, rng: random.Random) -> None:
        masters = self.masters()
        if masters:
            rng.choice(masters).kill()

    def revive(self) -> bool:
        dead = [s for s in self.servers if s not in self.alive()]
        for server in dead:
            server.start()
            server.wait()
        return bool(dead)


class ClusterRedis(Servers):
    name = "cluster"

    def __init__(self, directory: Path) -> None:
        self.cluster = LocalCluster(directory / "cluster")
        self.servers = self.cluster.servers
        self.env = {"REDIS_URL": self.cluster.url, "HERALD_BROKER_URL": RABBITMQ}

    def start(self) -> None:
        self.cluster.start()

    def stop(self) -> None:
        self.cluster.stop()


class SentinelRedis(Servers):
    name = "sentinel"

    def __init__(self, directory: Path) -> None:
        self.sentinel = LocalSentinel(directory / "sentinel")
        self.servers = [self.sentinel.master, self.sentinel.replica]
        self.env = {"REDIS_URL": self.sentinel.url}

    def start(self) -> None:
        self.sentinel.start()

    def stop(self) -> None:
        self.sentinel.stop()

    def masters(self) -> list[Any]:  # the one the sentinel names, if it is up
        current = self.sentinel.current_master()
        return [current] if current in self.alive() else []


TOPOLOGIES: dict[str, Callable[[Path], SoakRedis]] = {
    "redis": OneRedis, "cluster": ClusterRedis, "sentinel": SentinelRedis}


@dataclass
class Fleet:
    """Two web nodes, two workers and a Redis, kept running by a supervisor thread."""

    redis: SoakRedis
    env: dict[str, str]
    log_dir: Path
    ports: list[int]
    webs: list[WebNode] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=lambda: {"web": 0, "worker": 0,
                                                               "redis": 0})
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.webs = [WebNode(self.env, self.log_dir, port=port) for port in self.ports]
        self.workers = [Worker(self.env, self.log_dir) for _ in range(2)]
        start_all([*self.webs, *self.workers])  # side by side

    def supervise(self) -> None:
        """Restart whatever exited (Redis first: the others need it to come up)."""
        while not self.stopping.is_set():
            # A process that dies while starting (Redis killed again) is retried next round.
            with self.lock, contextlib.suppress(RuntimeError):
                self._revive()
            time.sleep(0.2)

    def _revive(self) -> None:
        if self.redis.revive():
            self.restarts["redis"] += 1
        for i, web in enumerate(self.webs):
            if not web.alive():
                self.webs[i] = WebNode(self.env, self.log_dir, port=web.port)
                self.restarts["web"] += 1
                self.webs[i].start()
        for i, worker in enumerate(self.workers):
            if not worker.alive():
                self.workers[i] = Worker(self.env, self.log_dir)
                self.restarts["worker"] += 1
                self.workers[i].start()

    def chaos(self, seconds: float, rng: random.Random, kills: list[str]) -> None:
        """For `seconds`, every 1.5-3 s, SIGKILL Redis (a master, on a cluster or under
        Sentinel), then a worker and a web node in a random order, then any of them at
        random; past `seconds`, whichever of the first three a slow run has not killed yet."""
        first = ["redis", *rng.sample(["worker", "web"], 2)]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(1.5, 3.0))
            target = (first[len(kills)] if len(kills) < len(first)
                      else rng.choice(["worker", "worker", "web", "web", "redis"]))
            self.kill(target, rng)
            kills.append(target)
        for target in first[len(kills):]:
            time.sleep(rng.uniform(1.5, 3.0))
            self.kill(target, rng)
            kills.append(target)

    def kill(self, target: str, rng: random.Random) -> None:
        with self.lock:
            if target == "redis":
                self.redis.kill(rng)
            else:
                procs: list[Process] = list(self.webs if target == "web" else self.workers)
                rng.choice(procs).kill()

    def stop(self) -> None:
        self.stopping.set()
        stop_all([*self.webs, *self.workers])  # side by side: a worker's warm shutdown is slow
        self.redis.stop()


@dataclass
class Resuming:
    """A client as the client libraries behave: positions kept, sent on every reconnect."""

    url: str
    token: str
    streams: list[str]
    project: int
    positions: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: dict[str, list[int]] = field(default_factory=dict)
    duplicates: int = 0
    unrecovered: list[str] = field(default_factory=list)
    connects: int = 0

    def __post_init__(self) -> None:
        self.positions = {s: {"offset": 0} for s in self.streams}
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2,
                                        reconnection_delay_max=1.0)
        self.sio.on("*", self._on_any)
        self.sio.on("connect", self._on_connect)

    def auth(self) -> dict[str, Any]:
        return {"token": self.token, "positions": {s: dict(p) for s, p in
                                                   self.positions.items()}}

    async def _on_connect(self) -> None:
        self.connects += 1
        if self.connects == 1:
            self.sio.start_background_task(self._join)

    async def _join(self) -> None:
        stream = f"project-{self.project}"
        ack = await self.sio.call("join-project", {"projectId": self.project,
                                                   "position": self.positions[stream]},
                                  timeout=10)
        if ack.get("ok"):
            self._advance(stream, ack["offset"], ack["epoch"])

    def _advance(self, stream: str, offset: int, epoch: str | None) -> None:
        current = self.positions.setdefault(stream, {"offset": 0})
        current["offset"] = max(int(current["offset"]), int(offset))
        if epoch:
            current["epoch"] = epoch

    async def _on_any(self, name: str, *args: Any) -> None:
        if name == "connected":
            payload = args[0]
            self.unrecovered += [s for s, ok in payload["recovered"].items() if not ok]
            for stream, head in payload["positions"].items():
                if stream not in self.positions:  # a stream it never asked for: from its head
                    self._advance(stream, head["offset"], head["epoch"])
            return
        meta = args[1] if len(args) == 2 and isinstance(args[1], dict) else None
        if meta is None or "stream" not in meta:
            return
        seen = self.received.setdefault(meta["stream"], [])
        if meta["offset"] in seen:
            self.duplicates += 1
        seen.append(meta["offset"])
        self._advance(meta["stream"], meta["offset"], meta["epoch"])

    def first_seen(self, stream: str) -> list[int]:
        return list(dict.fromkeys(self.received.get(stream, [])))


@dataclass
class PythonClient:
    """Herald's Python client library, as a service or a script would use it."""

    url: str
    token: str
    streams: list[str]
    project: int
    received: dict[str, list[int]] = field(default_factory=dict)
    resets: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.sub = Subscriber(self.url, get_token=lambda: self.token, storage=MemoryStore(),
                              on_reset=lambda stream, head: self.resets.append(stream))
        await self.sub.start()
        await self.sub.join_project(self.project)
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        async for event in self.sub:
            if event.meta is not None:
                self.received.setdefault(event.meta.stream, []).append(event.meta.offset)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.sub.close()


@dataclass
class NodeClient:
    """Herald's JavaScript client library in a Node process (tests/node/herald_follow.mjs)."""

    url: str
    token: str
    streams: list[str]
    project: int
    received: dict[str, list[int]] = field(default_factory=dict)
    resets: list[str] = field(default_factory=list)
    joined: threading.Event = field(default_factory=threading.Event)

    async def start(self) -> None:
        node = shutil.which("node")
        assert node is not None
        self.proc = subprocess.Popen([node, str(NODE_FOLLOW), self.url, self.token,
                                      str(self.project)], stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        assert await asyncio.to_thread(self.joined.wait, 30), "herald-client never joined"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            item = json.loads(line)
            if item["kind"] == "joined":
                self.joined.set()
            elif item["kind"] == "event":
                self.received.setdefault(item["stream"], []).append(item["offset"])
            elif item["kind"] == "reset":
                self.resets.append(item["stream"])

    async def stop(self) -> None:
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def writes(urls: list[str], admin: str, projects: list[int], stop: threading.Event,
           answers: dict[str, int]) -> None:
    """Steady PATCHes over HTTP to every project, through either web node."""
    clients = [httpx.Client(base_url=url, timeout=5,
                            headers={"Authorization": f"Bearer {admin}"}) for url in urls]
    i = 0
    try:
        while not stop.is_set():
            i += 1
            project = projects[i % len(projects)]
            try:
                response = clients[i % 2].patch(f"/api/projects/{project}",
                                                json={"progress": i % 101})
                key = str(response.status_code)
            except httpx.HTTPError:
                key = "no answer"
            answers[key] = answers.get(key, 0) + 1
            time.sleep(0.03)
    finally:
        for client in clients:
            client.close()


def heads(factory: Any) -> dict[str, tuple[int, int]]:
    with factory() as session:
        rows = session.execute(select(Stream.name, Stream.head, RelayCursor.dispatched)
                               .join(RelayCursor, RelayCursor.stream == Stream.name)).all()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


@pytest.fixture(params=list(TOPOLOGIES))
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Fleet, Any, str]]:
    require_pg()
    redis = TOPOLOGIES[request.param](tmp_path)
    redis.start()
    url = migrated_pg_database("_soak")
    engine = make_engine(url)
    factory = make_session_factory(engine)
    env = {"DATABASE_URL": url, **redis.env}
    with factory() as session, session.begin():
        admin = projects.create_user(session, email="root@test", role="admin", name="root")
    fleet = Fleet(redis, env, tmp_path, [free_port(), free_port()])
    try:
        fleet.start()
        yield fleet, factory, token(admin.id, "admin", "root@test")
    finally:
        fleet.stop()
        engine.dispose()
        drop_pg_database(url)


@pytest.mark.timeout(300)
async def test_every_client_holds_every_committed_event_after_random_kills(
    fleet: tuple[Fleet, Any, str],
) -> None:
    system, factory, admin = fleet
    urls = [web.url for web in system.webs]
    api = httpx.Client(base_url=urls[0], timeout=10, headers={"Authorization": f"Bearer {admin}"})
    if shutil.which("node") is None or not (NODE_FOLLOW.parents[2] / "clients" / "js"
                                            / "node_modules").is_dir():
        message = "node and clients/js/node_modules are needed (make install runs npm ci)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    clients: list[Resuming] = []
    official: list[PythonClient | NodeClient] = []
    projects: list[int] = []
    for i in range(CLIENTS):
        email = f"soak{i}@test"
        user = api.post("/api/users", json={"email": email, "role": "client", "name": email})
        user_id = user.json()["id"]
        project = api.post("/api/projects", json={"name": f"P{i}", "clientId": user_id,
                                                  "technicianIds": []}).json()["id"]
        projects.append(project)
        args = (urls[i % 2], token(user_id, "client", email),
                [f"user-{user_id}", f"project-{project}"], project)
        kind = KINDS[i % len(KINDS)]
        if kind == "bare":
            clients.append(Resuming(*args))
        else:
            official.append(PythonClient(*args) if kind == "python" else NodeClient(*args))
    api.close()
    for client in clients:
        await client.sio.connect(client.url, auth=client.auth, transports=["websocket"],
                                 wait_timeout=10)
    for lib in official:
        await lib.start()

    seed = int(os.environ.get("HERALD_SOAK_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    kills: list[str] = []
    answers: dict[str, int] = {}
    stop_writes = threading.Event()
    threads = [threading.Thread(target=system.supervise, daemon=True),
               threading.Thread(target=writes, args=(urls, admin, projects, stop_writes,
                                                     answers), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        seconds = SOAK_SECONDS if system.redis.name == "redis" else TOPOLOGY_SOAK_SECONDS
        await asyncio.to_thread(system.chaos, seconds, rng, kills)
        stop_writes.set()
        threads[1].join(10)
        await eventually_async(lambda: all(h == d for h, d in heads(factory).values()),
                               lambda: f"outbox not drained: {heads(factory)}", 90, 0.2)
        committed = {s: h for s, (h, _) in heads(factory).items()}

        everyone: list[Resuming | PythonClient | NodeClient] = [*clients, *official]

        def complete() -> bool:
            return all(set(c.received.get(s, [])) >= set(range(1, committed.get(s, 0) + 1))
                       for c in everyone for s in c.streams)

        def missing() -> str:
            return str({(type(c).__name__, s): committed.get(s, 0)
                        - len(set(c.received.get(s, [])))
                        for c in everyone for s in c.streams})
        await eventually_async(complete, lambda: f"missing per (client, stream): {missing()}", 90,
                               0.2)
        # Sentinels: one more change per project, each stream's late duplicates before it.
        with httpx.Client(base_url=urls[0], timeout=10,
                          headers={"Authorization": f"Bearer {admin}"}) as http:
            for project in projects:  # a node may still be coming back from a kill
                eventually(lambda p=project: http.patch(f"/api/projects/{p}",
                                                        json={"progress": 100}).is_success,
                           f"project {project} not changed", 60, ignoring=(httpx.HTTPError,))
        await eventually_async(lambda: all(h == d for h, d in heads(factory).values()),
                               lambda: f"outbox not drained: {heads(factory)}", 90, 0.2)
        committed.update({s: h for s, (h, _) in heads(factory).items()})
        await eventually_async(complete, lambda: f"missing per (client, stream): {missing()}", 90,
                               0.2)
    finally:
        system.stopping.set()
        stop_writes.set()
        for client in clients:
            await client.sio.disconnect()
        for lib in official:
            await lib.stop()

    total = sum(committed.get(s, 0) for c in everyone for s in c.streams)
    received = sum(len(c.received.get(s, [])) for c in everyone for s in c.streams)
    duplicates = sum(c.duplicates for c in clients)
    print(f"\nsoak redis={system.redis.name} seed={seed} seconds={seconds:.0f} kills={len(kills)} "
          f"({', '.join(f'{k}={kills.count(k)}' for k in sorted(set(kills)))}) "
          f"restarts={system.restarts} writes={answers} "
          f"committed={total} received={received} bare-client duplicates={duplicates} "
          f"reconnects={sum(c.connects - 1 for c in clients)}")
    assert sorted(set(kills)) == ["redis", "web", "worker"], kills
    for client in clients:
        assert client.unrecovered == []
        for stream in client.streams:
            assert client.first_seen(stream) == list(range(1, committed[stream] + 1)), stream
    for lib in official:  # the libraries de-duplicate: each event exactly once, in order
        assert lib.resets == []
        for stream in lib.streams:
            assert lib.received.get(stream, []) == list(range(1, committed[stream] + 1)), (
                type(lib).__name__, stream)
