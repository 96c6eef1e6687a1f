"""Fan-out and connections, Herald's web node beside a bare Node socket.io 4.8 server.

One run, side by side (bench/node/: the peer and the load client, both Node):

1. **Connect** `sockets` clients (HS256 token in `auth`, each its own user; Herald also
   reads the user row and the heads of two streams and runs its replay) to each server
   through the same load client, `inflight` handshakes at a time, until every socket has
   its `connected` event. All are in the room `clients` (Herald: the role stream).
2. **Fan-out**: `events` events to that room, publish -> last delivery. Herald: the
   relay's own messages (RedisPublisher, one pipelined PUBLISH) -> Redis -> web node;
   Node: one `POST /emit` whose handler emits them. Deliveries/s = sockets x events / time.
3. **Wide**: connect up to `wide` sockets in all (10,000 by default: the design's "one
   server ≈ 10K connections"), Herald's then Node's, the other servers stopped first;
   then one event to all of them, Herald and Node alternately.
4. **Memory**: resident memory of each server process before connecting and once all
   sockets are idle, per socket.

Herald is also measured with its fan-out fast path switched off
(HERALD_FAST_FANOUT=false: python-socketio's task-per-socket emit), on a second web node,
and scaled out: the same events to a second Herald web process on the same channel.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import utcnow
from app.outbox.publisher import RedisPublisher
from app.outbox.tables import EventRecord, RelayCursor, Stream, new_epoch
from app.portal.models import User
from bench.clients import token
from bench.env import CHANNEL, REDIS_URL
from bench.infra import WebNode, start_all, stop_all
from bench.peers import LoadClient, NodeMissing, NodePeer, cpu_seconds, require_node, rss_kib
from bench.stats import Figure, Report, median

ROOM = "clients"


@dataclass(frozen=True)
class FanoutSizes:
    sockets: int = 2000
    events: int = 10
    wide: int = 10000
    reps: int = 5
    inflight: int = 50


def make_clients(factory: sessionmaker[Session], count: int) -> list[int]:
    """`count` client users and their streams, in bulk (set-up, not measured)."""
    tag = uuid.uuid4().hex[:8]
    with factory() as session, session.begin():
        ids = list(session.scalars(insert(User).returning(User.id), [
            {"email": f"fan-{tag}-{i}@bench", "name": "bench", "role": "client",
             "created_at": utcnow()} for i in range(count)]))
        names = [f"user-{i}" for i in ids]
        if session.get(Stream, ROOM) is None:
            names.append(ROOM)
        session.execute(insert(Stream), [{"name": n, "epoch": new_epoch(), "head": 0,
                                          "pruned_through": 0, "created_at": utcnow()}
                                         for n in names])
        session.execute(insert(RelayCursor), [{"stream": n, "dispatched": 0, "state": "active",
                                               "attempts": 0} for n in names])
    return ids


def notification(offset: int) -> EventRecord:
    payload = {"type": "info", "title": "Deployment finished",
               "message": f"Build {offset} of project Atlas is live on production.",
               "link": f"/projects/7/builds/{offset}"}
    return EventRecord(str(uuid.uuid4()), ROOM, offset, "bench", "notification", payload,
                       datetime.now(UTC))


class Target:
    """One server under test with its load client and its sockets."""

    def __init__(self, name: str, url: str, pid: int, emit: Any) -> None:
        self.name = name
        self.url = url
        self.pid = pid
        self.emit = emit  # async (records) -> None
        self.load = LoadClient()
        self.connected = 0
        self.connect_seconds = 0.0
        self.connect_cpu = 0.0  # the server's CPU seconds while connecting
        self.rss_before = 0

    async def connect(self, tokens: list[str], inflight: int) -> dict[str, Any]:
        cpu = cpu_seconds(self.pid)
        answer = await self.load.connect(self.url, tokens, inflight=inflight)
        self.connect_cpu += cpu_seconds(self.pid) - cpu
        if answer["failed"]:
            raise RuntimeError(f"{self.name}: {answer['failed']} connects failed")
        self.connected += int(answer["connected"])
        self.connect_seconds += float(answer["seconds"])
        return answer

    async def broadcast(self, records: list[EventRecord]) -> tuple[float, float]:
        """(seconds publish -> last delivery, server CPU seconds meanwhile)."""
        await self.load.arm(self.connected * len(records))
        cpu = cpu_seconds(self.pid)
        started = time.time()
        await self.emit(records)
        last = await self.load.arrived()
        return last - started, cpu_seconds(self.pid) - cpu


async def run(report: Report, factory: sessionmaker[Session], env: dict[str, str],
              sizes: FanoutSizes) -> None:
    report.section(f"Fan-out and connections, Herald's web node beside bare Node socket.io "
                   f"4.8 (one process each, same load client), median of {sizes.reps}")
    try:
        require_node()
    except NodeMissing as exc:
        report.add(Figure("fanout", "fan-out / connections beside Node", float("nan"), "",
                          note=f"skipped: {exc}"))
        return
    wide = max(sizes.wide, sizes.sockets)
    users = await asyncio.to_thread(make_clients, factory, wide)
    tokens = [token(u, "client") for u in users]
    web = WebNode({**env, "HERALD_SOCKETIO_CHANNEL": CHANNEL})
    web2 = WebNode({**env, "HERALD_SOCKETIO_CHANNEL": CHANNEL})  # scaling out: same channel
    slow = WebNode({**env, "HERALD_SOCKETIO_CHANNEL": f"{CHANNEL}-slow",
                    "HERALD_FAST_FANOUT": "false"})
    peer = NodePeer()
    await asyncio.to_thread(start_all, web, web2, slow, peer)
    fast_pub = RedisPublisher(REDIS_URL, channel=CHANNEL)
    slow_pub = RedisPublisher(REDIS_URL, channel=f"{CHANNEL}-slow")

    async def node_emit(records: list[EventRecord]) -> None:
        await peer.emit(ROOM, "notification", [[r.payload, r.meta] for r in records])

    herald = Target("Herald", web.url, _pid(web),
                    lambda rs: asyncio.to_thread(fast_pub.publish, rs))
    before = Target("Herald, python-socketio's emit", slow.url, _pid(slow),
                    lambda rs: asyncio.to_thread(slow_pub.publish, rs))
    node = Target("Node", peer.url, _pid(peer), node_emit)
    second = Target("Herald, second web process", web2.url, _pid(web2),
                    lambda rs: asyncio.to_thread(fast_pub.publish, rs))
    targets = [herald, node, before, second]
    try:
        for t in targets:
            await t.load.start()
            t.rss_before = rss_kib(t.pid)
        first = tokens[:sizes.sockets]
        for t in (herald, node, before):
            await t.connect(first, sizes.inflight)
        await asyncio.sleep(1)  # replays done, gates closed
        await _fanout(report, sizes, herald, node, before)
        await _scale_out(report, sizes, herald, second, first)
        await _free_the_others(before, slow, web2)
        await _connect_wide(sizes, herald, node, tokens[sizes.sockets:wide])
        await _connects_and_memory(report, sizes, herald, node)
        await _wide(report, sizes, herald, node)
    finally:
        for t in targets:
            await t.load.close()
        fast_pub.close()
        slow_pub.close()
        await asyncio.to_thread(stop_all, web, web2, slow, peer)


_offset = 0


def next_records(count: int) -> list[EventRecord]:
    global _offset
    out = [notification(_offset + i + 1) for i in range(count)]
    _offset += count
    return out


async def _fanout(report: Report, sizes: FanoutSizes, herald: Target, node: Target,
                  before: Target) -> None:
    total = sizes.sockets * sizes.events
    runs: dict[str, list[float]] = {"herald": [], "node": [], "before": [], "ratio": [],
                                    "ratio_before": [], "cpu_h": [], "cpu_n": []}
    await herald.broadcast(next_records(1))  # warm-up
    await node.broadcast(next_records(1))
    await before.broadcast(next_records(1))
    for _ in range(sizes.reps):
        h, cpu_h = await herald.broadcast(next_records(sizes.events))
        n, cpu_n = await node.broadcast(next_records(sizes.events))
        b, _cpu = await before.broadcast(next_records(sizes.events))
        runs["herald"].append(total / h)
        runs["node"].append(total / n)
        runs["before"].append(total / b)
        runs["ratio"].append(n / h)
        runs["ratio_before"].append(b / h)
        runs["cpu_h"].append(cpu_h / total * 1e6)
        runs["cpu_n"].append(cpu_n / total * 1e6)
    what = f"{sizes.sockets:,} sockets x {sizes.events} events"
    report.add(Figure("fanout", f"Herald: {what}", median(runs["herald"]), "ev/s",
                      runs["herald"], "deliveries/s, publish -> last delivery"))
    report.add(Figure("fanout", f"Node socket.io: {what}", median(runs["node"]), "ev/s",
                      runs["node"]))
    report.add(Figure("fanout", "  ratio Herald / Node (deliveries/s)",
                      100 * median(runs["ratio"]), "%", [100 * r for r in runs["ratio"]],
                      "goal >= 100 %"))
    report.add(Figure("fanout", "Herald, python-socketio's own emit (before)",
                      median(runs["before"]), "ev/s", runs["before"],
                      "HERALD_FAST_FANOUT=false, same sizes"))
    report.add(Figure("fanout", "  fast path / python-socketio's emit",
                      median(runs["ratio_before"]), "x", runs["ratio_before"]))
    report.add(Figure("fanout", "(CPU) Herald web node per delivery", median(runs["cpu_h"]),
                      "us", runs["cpu_h"]))
    report.add(Figure("fanout", "(CPU) Node per delivery", median(runs["cpu_n"]), "us",
                      runs["cpu_n"]))


async def _scale_out(report: Report, sizes: FanoutSizes, herald: Target,
                     second: Target, tokens: list[str]) -> None:
    """The same events to `sockets` sockets on one web process, then to `sockets` more on a
    second process of the same channel as well: deliveries/s with 1 and 2 processes."""
    per_socket = sizes.sockets
    runs: dict[str, list[float]] = {"one": [], "two": []}
    for _ in range(sizes.reps):
        one, _c = await herald.broadcast(next_records(sizes.events))
        runs["one"].append(per_socket * sizes.events / one)
    await second.connect(tokens, sizes.inflight)  # only now: it shares the channel
    await asyncio.sleep(1)
    try:
        for _ in range(sizes.reps):
            records = next_records(sizes.events)
            await herald.load.arm(per_socket * sizes.events)
            await second.load.arm(per_socket * sizes.events)
            started = time.time()
            await herald.emit(records)
            last = max(await herald.load.arrived(), await second.load.arrived())
            runs["two"].append(2 * per_socket * sizes.events / (last - started))
    finally:
        await second.load.close()  # its sockets gone: the other figures are one process's
    report.add(Figure("scale", f"1 web process: {per_socket:,} sockets x {sizes.events}",
                      median(runs["one"]), "ev/s", runs["one"], "deliveries/s"))
    report.add(Figure("scale", f"2 web processes: {per_socket:,} sockets each",
                      median(runs["two"]), "ev/s", runs["two"],
                      "deliveries/s, one PUBLISH reaches both (websocket clients: no "
                      "sticky sessions)"))


async def _free_the_others(before: Target, *servers: Any) -> None:
    """Before the wide part: the "before" node's sockets closed and the servers measured
    no more stopped, so that the two under test (each holding `wide` sockets, 10,000 by
    default) have the machine to themselves."""
    await before.load.close()
    await asyncio.to_thread(stop_all, *servers)


async def _connect_wide(sizes: FanoutSizes, herald: Target, node: Target,
                        tokens: list[str]) -> None:
    """Herald's and Node's sockets up to `wide`, one server after the other (each connect
    storm alone on the machine); then a second for replays to end and gates to close."""
    if tokens:
        for t in (herald, node):
            await t.connect(tokens, sizes.inflight)
    await asyncio.sleep(1)


async def _connects_and_memory(report: Report, sizes: FanoutSizes, herald: Target,
                               node: Target) -> None:
    rates = {t.name: t.connected / t.connect_seconds for t in (herald, node)}
    note = f"{herald.connected:,} sockets, {sizes.inflight} handshakes at a time, JWT HS256"
    report.add(Figure("connect", "Herald: connects/s (until `connected`)", rates["Herald"],
                      "/s", note=note))
    report.add(Figure("connect", "Node socket.io, same JWT check: connects/s", rates["Node"],
                      "/s"))
    report.add(Figure("connect", "  ratio Herald / Node", 100 * rates["Herald"] / rates["Node"],
                      "%", note="goal >= 50 %"))
    # CPU per connect: steadier than the rate on a shared machine (user + system time of
    # the server process, its worker threads included; not PostgreSQL's or Redis's).
    cpu = {t.name: 1000 * t.connect_cpu / t.connected for t in (herald, node)}
    report.add(Figure("connect", "(CPU) Herald web node per connect", cpu["Herald"], "ms"))
    report.add(Figure("connect", "(CPU) Node per connect", cpu["Node"], "ms"))
    per = {t.name: (rss_kib(t.pid) - t.rss_before) / t.connected for t in (herald, node)}
    report.add(Figure("memory", "Herald web node: memory per idle joined socket",
                      per["Herald"], "KiB", note=f"RSS delta / {herald.connected:,}; "
                                                 "goal <= 25 KiB (issue 16)"))
    report.add(Figure("memory", "Node socket.io: memory per idle joined socket", per["Node"],
                      "KiB"))


async def _wide(report: Report, sizes: FanoutSizes, herald: Target, node: Target) -> None:
    runs: dict[str, list[float]] = {"herald": [], "node": [], "ratio": []}
    for _ in range(sizes.reps):
        h, _c = await herald.broadcast(next_records(1))
        n, _c = await node.broadcast(next_records(1))
        runs["herald"].append(h * 1000)
        runs["node"].append(n * 1000)
        runs["ratio"].append(n / h)
    what = f"one event to {herald.connected:,} sockets"
    report.add(Figure("wide", f"Herald: {what}", median(runs["herald"]), "ms", runs["herald"],
                      "publish -> last delivery"))
    report.add(Figure("wide", f"Node socket.io: {what}", median(runs["node"]), "ms",
                      runs["node"]))
    report.add(Figure("wide", "  ratio Herald / Node (speed)", 100 * median(runs["ratio"]), "%",
                      [100 * r for r in runs["ratio"]], "goal >= 50 %"))


def _pid(proc: Any) -> int:
    assert proc.proc is not None
    return int(proc.proc.pid)
