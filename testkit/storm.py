"""A reconnect storm over two real web nodes, for the bench (bench/storm_bench.py, 10,000
sockets) and the suite (tests/test_storm.py, a few hundred).

Technicians, each a socket, half opened on each node. Each socket is in its `user-{id}`
room, the `technicians` role room and `per_socket` of `projects` shared project rooms
(restored at connect through `positions`). A writer appends events throughout, at `rate`
events/s, to the role room, the projects and the user streams, and the real relay (a
Celery worker, woken by the writer's nudges) publishes them. Then the first node is
SIGKILLed; `missed` events are written to every shared room and one to each of its
sockets' user streams while it is down; it is started again on the same port. Its
sockets reconnect with the positions they hold, each after a random delay in [0, jitter]
s and to the next node in turn (a round-robin load balancer: an attempt on the node still
down fails and is retried, with backoff, on the next), while the writer goes on. Once they
are all back the writer stops, and every socket, on either node, must reach its streams'
heads in order: a gap, an event before `connected`, or a stream not recovered is a
failure, a duplicate is allowed (bench/node/storm.js checks each event).

The nodes' page counters (`herald_replay_page_requests` / `_reads` in /metrics, by stream
kind) show how the replays' database reads were shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import utcnow
from app.outbox.tables import RelayCursor, Stream, new_epoch
from app.outbox.writer import append_rows
from app.portal.models import Project, User, project_technicians
from testkit.clients import token
from testkit.eventually import eventually_async
from testkit.nodescript import NodeScript
from testkit.processes import ROOT

STORM_JS = ROOT / "bench" / "node" / "storm.js"
ROLE_ROOM = "technicians"
Nudge = Callable[[list[str]], None]


@dataclass(frozen=True)
class StormSizes:
    sockets: int = 10_000  # over the two nodes, half each
    projects: int = 200  # shared project rooms
    per_socket: int = 2  # project rooms each socket is in
    missed: int = 20  # events written to each shared room while the node is down
    rate: float = 20.0  # events/s written throughout (1 in 20 to the role room)
    warmup: float = 2.0  # seconds of writes before the kill
    jitter: float = 1.0  # reconnect delays spread over [0, jitter] s
    inflight: int = 100  # handshakes at a time when the sockets first open
    timeout: float = 900.0  # for the first connects, the reconnects, and the recovery


@dataclass(frozen=True)
class Cast:
    users: list[int]
    projects: list[int]
    rooms: dict[int, list[str]]  # user -> the project rooms its socket is in

    def streams(self) -> list[str]:
        return [ROLE_ROOM, *(f"project-{p}" for p in self.projects),
                *(f"user-{u}" for u in self.users)]


def make_cast(factory: sessionmaker[Session], sizes: StormSizes) -> Cast:
    """The technicians, their projects and every stream, in bulk (set-up, not measured)."""
    tag = uuid.uuid4().hex[:8]
    with factory() as session, session.begin():
        owner = session.scalar(insert(User).returning(User.id), [{
            "email": f"storm-{tag}-owner@test", "name": "owner", "role": "client",
            "created_at": utcnow()}])
        users = list(session.scalars(insert(User).returning(User.id), [
            {"email": f"storm-{tag}-{i}@test", "name": f"tech {i}", "role": "technician",
             "created_at": utcnow()} for i in range(sizes.sockets)]))
        projects = list(session.scalars(insert(Project).returning(Project.id), [
            {"name": f"storm {tag} {i}", "client_id": owner, "progress": 0,
             "status": "active", "created_at": utcnow()} for i in range(sizes.projects)]))
        member: dict[int, list[int]] = {
            u: [projects[(i * sizes.per_socket + k) % len(projects)]
                for k in range(min(sizes.per_socket, len(projects)))]
            for i, u in enumerate(users)}
        session.execute(insert(project_technicians), [
            {"project_id": p, "user_id": u} for u, ps in member.items() for p in ps])
        cast = Cast(users, projects, {u: [f"project-{p}" for p in ps]
                                      for u, ps in member.items()})
        add_streams(session, cast.streams())
    return cast


def add_streams(session: Session, names: list[str]) -> None:
    """Streams (and their relay cursors) for those of `names` that do not exist, in bulk."""
    have = set(session.scalars(select(Stream.name).where(Stream.name.in_(names))))
    new = [n for n in names if n not in have]
    if not new:
        return
    session.execute(insert(Stream), [{"name": n, "epoch": new_epoch(), "head": 0,
                                      "pruned_through": 0, "created_at": utcnow()}
                                     for n in new])
    session.execute(insert(RelayCursor), [{"stream": n, "dispatched": 0, "state": "active",
                                           "attempts": 0} for n in new])


def heads(factory: sessionmaker[Session], names: list[str]) -> dict[str, int]:
    with factory() as session:
        return {n: int(h) for n, h in session.execute(
            select(Stream.name, Stream.head).where(Stream.name.in_(names)))}


def _event(note: str) -> dict[str, Any]:
    return {"type": "info", "title": "storm", "message": note}


class Writer(threading.Thread):
    """Appends `rate` events/s (a transaction every 0.1 s) until stopped: 1 in 20 to the
    role room, 7 in 20 to a project, the rest to a user stream; nudges after each commit."""

    TICK = 0.1

    def __init__(self, factory: sessionmaker[Session], cast: Cast, rate: float,
                 nudge: Nudge) -> None:
        super().__init__(name="storm-writer", daemon=True)
        self.factory, self.cast, self.rate, self.nudge = factory, cast, rate, nudge
        self.written = 0
        self.errors: list[str] = []
        self._stop_writing = threading.Event()
        self._random = random.Random(16)

    def _stream(self, k: int) -> str:
        if k % 20 == 0:
            return ROLE_ROOM
        if k % 20 < 8:
            return f"project-{self._random.choice(self.cast.projects)}"
        return f"user-{self._random.choice(self.cast.users)}"

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop_writing.wait(self.TICK):
            due = int((time.monotonic() - started) * self.rate) - self.written
            rows = [(self._stream(self.written + i), "notification", _event("live"))
                    for i in range(due)]
            try:
                write(self.factory, rows, self.nudge)
            except Exception as exc:  # reported with the figures, not raised
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            self.written += len(rows)

    def stop(self) -> None:
        self._stop_writing.set()
        if self.ident is not None:  # started
            self.join(30)


def write(factory: sessionmaker[Session], rows: list[tuple[str, str, dict[str, Any]]],
          nudge: Nudge) -> None:
    if rows:
        with factory() as session, session.begin():
            append_rows(session, rows, nudge=nudge)


class WebNodeLike(Protocol):
    port: int

    @property
    def url(self) -> str: ...
    def kill(self) -> None: ...
    def wait_ready(self, timeout: float | None = None) -> None: ...


class StormClient(NodeScript):
    """bench/node/storm.js: sockets that track their streams and reconnect with positions."""

    def __init__(self, node: str, log_dir: Path) -> None:
        super().__init__(node, STORM_JS, log_dir / f"storm-client-{os.getpid()}-{id(self)}.log")

    async def open(self, urls: list[str], home: int, users: list[int],
                   rooms: dict[int, list[str]], sizes: StormSizes) -> dict[str, Any]:
        sockets = [{"token": token(u, "technician"), "home": home,
                    "positions": {room: {"offset": 0} for room in rooms[u]}} for u in users]
        return await self.ask({"cmd": "open", "urls": urls, "sockets": sockets,
                               "inflight": sizes.inflight, "jitter": sizes.jitter},
                              timeout=sizes.timeout)

    async def until(self, target: dict[str, int], timeout: float) -> dict[str, Any]:
        return await self.ask({"cmd": "until", "heads": target, "timeout": timeout},
                              timeout=timeout + 60)

    async def counters(self) -> dict[str, Any]:
        return await self.ask({"cmd": "counters"})


PageCounts = dict[str, tuple[int, int]]  # stream kind -> (requests, reads)


def page_counts(url: str) -> PageCounts:
    """A node's replay page requests and reads by stream kind, from its /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    counts: dict[str, list[int]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("herald_replay_page_requests", "herald_replay_page_reads"):
            continue
        at = 0 if family.name.endswith("requests") else 1
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts.setdefault(sample.labels["kind"], [0, 0])[at] += int(sample.value)
    return {kind: (c[0], c[1]) for kind, c in counts.items()}


def _minus(after: PageCounts, before: PageCounts) -> PageCounts:
    zero = (0, 0)
    return {k: (v[0] - before.get(k, zero)[0], v[1] - before.get(k, zero)[1])
            for k, v in after.items()}


def _plus(a: PageCounts, b: PageCounts) -> PageCounts:
    zero = (0, 0)
    return {k: (a.get(k, zero)[0] + b.get(k, zero)[0], a.get(k, zero)[1] + b.get(k, zero)[1])
            for k in {*a, *b}}


@dataclass
class StormResult:
    sockets: int  # in all, on both nodes
    killed: int  # of them on the node that was killed (they reconnected)
    streams: int  # stream positions tracked by the sockets in all
    expected_streams: int  # what they should track (user, role and project rooms each)
    complete: int  # sockets that had every event of their streams up to the heads
    reconnected: int  # reconnects that got `connected`
    lost: dict[str, int]  # connections lost, by websocket close code (1006: the kill)
    survivor_lost: dict[str, int]  # of them, of sockets opened on the node not killed
    failed_attempts: int  # reconnect attempts that failed (node down) and were retried
    gaps: int
    early: int
    presence_early: int  # presence events that reached a socket before its `connected`
    resets: int
    duplicates: int
    written: int  # events written throughout (live, and the burst while the node was down)
    restart_s: float  # kill -> the node started again answers /healthz
    reconnected_s: float  # kill -> the last reconnect's `connected`
    recovered_s: float  # kill -> the last socket had every event
    tail_s: float  # writer stopped -> the last socket had every event
    pages: PageCounts = field(default_factory=dict)  # the storm's, both nodes
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.complete == self.sockets and self.streams == self.expected_streams
                and not (self.gaps or self.early or self.presence_early or self.resets
                         or self.errors))


async def run_storm(factory: sessionmaker[Session], nodes: tuple[WebNodeLike, WebNodeLike],
                    restart: Callable[[WebNodeLike], WebNodeLike], nudge: Nudge,
                    sizes: StormSizes, *, node_bin: str, log_dir: Path) -> StormResult:
    """The storm on two started web nodes; `restart(node)` spawns a node on `node`'s port
    (not waiting for it). Returns with the first node restarted (the caller stops it)."""
    cast = await asyncio.to_thread(make_cast, factory, sizes)
    first, second = nodes
    urls = [first.url, second.url]
    killed_users, other_users = cast.users[0::2], cast.users[1::2]
    clients = StormClient(node_bin, log_dir), StormClient(node_bin, log_dir)
    writer = Writer(factory, cast, sizes.rate, nudge)
    try:
        for client in clients:
            await client.start()
        opened = await asyncio.gather(
            clients[0].open(urls, 0, killed_users, cast.rooms, sizes),
            clients[1].open(urls, 1, other_users, cast.rooms, sizes))
        if any(o["failed"] for o in opened):
            raise RuntimeError(f"sockets failed to open: {opened}")
        writer.start()
        await asyncio.sleep(sizes.warmup)
        before = await asyncio.to_thread(page_counts, second.url)
        killed_at = time.time()
        await asyncio.to_thread(first.kill)
        burst = [(room, "notification", _event("missed"))
                 for room in [ROLE_ROOM, *(f"project-{p}" for p in cast.projects)]
                 for _ in range(sizes.missed)]
        burst += [(f"user-{u}", "notification", _event("missed")) for u in killed_users]
        await asyncio.to_thread(write, factory, burst, nudge)
        restarted = restart(first)
        await asyncio.to_thread(restarted.wait_ready, sizes.timeout)
        ready_at = time.time()
        async def reconnected() -> bool:
            state = await clients[0].counters()
            return bool(state["open"] == len(killed_users)
                        and state["reconnects"] >= len(killed_users))

        # Writes go on until the killed node's sockets are back (or the bound passed: the
        # counts below then say what did not recover).
        with contextlib.suppress(AssertionError):
            await eventually_async(reconnected, "reconnects", timeout=sizes.timeout,
                                   interval=0.2)
        writer.stop()
        stopped_at = time.time()
        target = await asyncio.to_thread(heads, factory, cast.streams())
        done = await asyncio.gather(*(c.until(target, sizes.timeout) for c in clients))
        after = _plus(await asyncio.to_thread(page_counts, restarted.url),
                      _minus(await asyncio.to_thread(page_counts, second.url), before))
    finally:
        writer.stop()
        for client in clients:
            await client.close()
    last = max(d["t_last"] for d in done)

    def total(key: str) -> int:
        return sum(int(d[key]) for d in done)

    return StormResult(
        sockets=len(cast.users), killed=len(killed_users), streams=total("streams"),
        expected_streams=sum(2 + len(cast.rooms[u]) for u in cast.users),
        complete=total("complete"), reconnected=total("reconnects"),
        lost={code: sum(int(d["closeCodes"].get(code, 0)) for d in done)
              for code in {k for d in done for k in d["closeCodes"]}},
        survivor_lost={code: int(n) for code, n in done[1]["closeCodes"].items()},
        failed_attempts=total("refused"), gaps=total("gaps"), early=total("early"),
        presence_early=total("presenceEarly"),
        resets=total("resets"), duplicates=total("duplicates"),
        written=writer.written + len(burst), restart_s=ready_at - killed_at,
        reconnected_s=float(done[0]["tReconnected"]) - killed_at,
        recovered_s=last - killed_at, tail_s=max(0.0, last - stopped_at), pages=after,
        errors=writer.errors)
