"""A web node's CPU per event of rooms it does not hold: shared channel vs room channels.

`python -m bench.rooms_bench [--events N] [--streams S] [--reps R] [--redis-cluster]`
(runnable alone; needs the test PostgreSQL and Redis, like `make bench`; `--redis-cluster`
measures the cluster-wide part on a local 3-master Redis Cluster too, side by side).

One real web node (`python -m app.web`) with one socket, in none of the traffic's rooms
(a node's Redis listener starts with its first connection). The relay's own publisher
(RedisPublisher, one pipelined write per batch) sends `events` events spread over
`streams` streams, side by side, alternately:

- **shared**: `room_channels=False`, PUBLISH on the shared Socket.IO channel (before
  issue 16, and HERALD_ROOM_CHANNELS=false): every node receives and decodes every event;
- **rooms**: SPUBLISH on each stream's channel (the default): a node receives only the
  events of rooms it holds a socket in — here none.

Then **cluster-wide delivery**: 1, 2 and 4 web nodes on one Redis, `sockets` sockets (each
its own user, so each in its own `user-N` room) spread evenly over them by one Node load
client (bench/node/load.js); `cluster_events` events round-robin over those users' streams,
published as fast as the publisher goes; events/s = events / (first publish -> last
delivery), shared channel vs room channels, side by side.

The CPU figure is the node's process CPU time (/proc/<pid>/stat, user + system) from the
first publish until it is idle again, minus what it burns idle over the same wall time
(measured just before), divided by the events. The node's
`herald_node_messages_received_total` says what it took off Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

from app.core.db import make_engine, make_session_factory
from app.core.migrate import upgrade
from app.outbox.publisher import RedisPublisher
from app.outbox.tables import EventRecord
from app.portal import projects
from bench import infra, teardown
from bench.env import CHANNEL, REDIS_URL
from bench.fanout_bench import make_clients
from bench.peers import LoadClient, cpu_seconds
from bench.stats import Figure, Report, median
from testkit.clients import SocketClient, token
from testkit.ops import scrape

BATCH = 500
IDLE_WINDOW = 0.5  # seconds: the node is idle again when a window costs about idle CPU


def events_for(count: int, streams: int) -> list[EventRecord]:
    ts = datetime.now(UTC)
    payload = {"id": 1, "progress": 42, "title": "a project of some length", "tags": ["a", "b"]}
    return [EventRecord(str(uuid.uuid4()), f"project-{900_000 + i % streams}", i // streams + 1,
                        "e", "project-updated", payload, ts) for i in range(count)]


def received(url: str) -> float:
    samples = scrape(httpx.get(f"{url}/metrics", timeout=30).text)
    return sum(v for (name, _), v in samples.items()
               if name == "herald_node_messages_received_total")


def idle_rate(pid: int, seconds: float = 2.0) -> float:
    """CPU seconds per wall second the idle node uses (heartbeats, timers)."""
    start, cpu = time.monotonic(), cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - cpu) / (time.monotonic() - start)


def cpu_per_event(pid: int, publisher: RedisPublisher, events: list[EventRecord]) -> float:
    """µs of node CPU per event, from the first publish until the node is idle again."""
    idle = idle_rate(pid)
    start, cpu = time.monotonic(), cpu_seconds(pid)
    for i in range(0, len(events), BATCH):
        publisher.publish(events[i:i + BATCH])
    while True:  # until a window costs no more than idle (+ one clock tick)
        before = cpu_seconds(pid)
        time.sleep(IDLE_WINDOW)
        if cpu_seconds(pid) - before <= idle * IDLE_WINDOW + 1 / os.sysconf("SC_CLK_TCK"):
            break
    used = cpu_seconds(pid) - cpu - idle * (time.monotonic() - start)
    return used / len(events) * 1e6  # may be a hair below 0: idle CPU is an estimate


def a_user(url: str) -> str:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            user = projects.create_user(session, email="rooms@bench", role="client")
            session.flush()
            return token(user.id, "client", "rooms@bench")
    finally:
        engine.dispose()


def user_events(users: list[int], count: int) -> list[EventRecord]:
    ts = datetime.now(UTC)
    payload = {"type": "info", "title": "Build finished", "message": "Atlas is live."}
    return [EventRecord(str(uuid.uuid4()), f"user-{users[i % len(users)]}",
                        i // len(users) + 1, "e", "notification", payload, ts)
            for i in range(count)]


async def cluster(report: Report, url: str, *, nodes: list[int], sockets: int, events: int,
                  reps: int, redis_url: str = REDIS_URL, where: str = "one Redis") -> None:
    engine = make_engine(url)
    factory = make_session_factory(engine)
    report.section(f"Events/s delivered cluster-wide, web nodes on {where} ({events:,} "
                   f"events over the user rooms of {sockets:,} sockets spread over the nodes)")
    # On a Redis Cluster, Celery's broker must be another Redis (the web nodes check it).
    extra = {} if redis_url == REDIS_URL else {"REDIS_URL": redis_url,
                                               "HERALD_BROKER_URL": REDIS_URL}
    try:
        for count in nodes:
            channel = f"{CHANNEL}-cluster{count}"
            webs = [infra.WebNode({"DATABASE_URL": url, "HERALD_SOCKETIO_CHANNEL": channel,
                                   **extra})
                    for _ in range(count)]
            load = LoadClient()
            try:
                await asyncio.to_thread(infra.start_all, *webs)
                await load.start()
                users = await asyncio.to_thread(make_clients, factory, sockets)
                share = -(-len(users) // count)
                for i, web in enumerate(webs):
                    tokens = [token(u, "client") for u in users[i * share:(i + 1) * share]]
                    answer = await load.connect(web.url, tokens)
                    assert not answer["failed"], answer
                records = user_events(users, events)
                rates: dict[str, list[float]] = {"shared": [], "rooms": []}
                for _ in range(reps):
                    for mode in ("shared", "rooms"):
                        publisher = RedisPublisher(redis_url, channel=channel,
                                                   room_channels=mode == "rooms")
                        try:
                            await load.arm(len(records))
                            started = time.time()
                            for i in range(0, len(records), BATCH):
                                publisher.publish(records[i:i + BATCH])
                            rates[mode].append(len(records) / (await load.arrived() - started))
                        finally:
                            publisher.close()
                        await asyncio.sleep(1)  # the nodes idle again
                for mode, label in (("shared", "shared channel"), ("rooms", "room channels")):
                    report.add(Figure("rooms", f"{count} web node(s) on {where}, {label}",
                                      median(rates[mode]), "ev/s", rates[mode]))
            finally:
                await load.close()
                await asyncio.to_thread(infra.stop_all, *webs)
    finally:
        engine.dispose()


async def run(report: Report, *, events: int, streams: int, reps: int,
              nodes: list[int] | None = None, sockets: int = 400,
              cluster_events: int = 10_000, redis_cluster: bool = False) -> None:
    url = infra.create_database("rooms")  # not the main run's database, still in use
    web = infra.WebNode({"DATABASE_URL": url, "HERALD_SOCKETIO_CHANNEL": CHANNEL})
    socket: SocketClient | None = None
    try:
        await asyncio.to_thread(infra.start_all, web, meanwhile=lambda: upgrade(url))
        socket = SocketClient(web.url, await asyncio.to_thread(a_user, url))
        await socket.connect()  # in its user and role rooms only
        assert web.proc is not None
        await asyncio.to_thread(measure, report, web, events=events, streams=streams,
                                reps=reps)
        await socket.close()
        socket = None
        await asyncio.to_thread(infra.stop_all, web)
        if nodes:
            await cluster(report, url, nodes=nodes, sockets=sockets, events=cluster_events,
                          reps=reps)
        if nodes and redis_cluster:
            await on_redis_cluster(report, url, nodes=nodes, sockets=sockets,
                                   events=cluster_events, reps=reps)
    finally:
        if socket is not None:
            await socket.close()
        await asyncio.to_thread(infra.stop_all, web)
        infra.drop_database(url)


async def on_redis_cluster(report: Report, url: str, *, nodes: list[int], sockets: int,
                           events: int, reps: int) -> None:
    """The cluster-wide figures again, on a local 3-master Redis Cluster (with replicas)."""
    from testkit.redis_cluster import LocalCluster

    with tempfile.TemporaryDirectory(prefix="herald-bench-cluster-") as tmp:
        local = LocalCluster(Path(tmp))
        try:
            await asyncio.to_thread(local.start)
            await cluster(report, url, nodes=nodes, sockets=sockets, events=events, reps=reps,
                          redis_url=local.url, where="a 3-master Redis Cluster")
        finally:
            await asyncio.to_thread(local.stop)


def measure(report: Report, web: infra.WebNode, *, events: int, streams: int,
            reps: int) -> None:
    assert web.proc is not None
    pid = web.proc.pid
    batch = events_for(events, streams)
    report.section(f"Web node CPU per event of rooms it does not hold ({events:,} events "
                   f"over {streams:,} streams, the node's one socket in none of them)")
    results: dict[str, list[float]] = {"shared": [], "rooms": []}
    got: dict[str, list[float]] = {"shared": [], "rooms": []}
    for _ in range(reps):
        for mode in ("shared", "rooms"):
            publisher = RedisPublisher(REDIS_URL, channel=CHANNEL,
                                       room_channels=mode == "rooms")
            try:
                before = received(web.url)
                results[mode].append(cpu_per_event(pid, publisher, batch))
                got[mode].append(received(web.url) - before)
            finally:
                publisher.close()
    for mode, label in (("shared", "shared channel (PUBLISH, before)"),
                        ("rooms", "room channels (SPUBLISH, default)")):
        report.add(Figure("rooms", f"node CPU/event, {label}", median(results[mode]),
                          "µs", results[mode],
                          note=f"received {median(got[mode]):,.0f}/{events:,}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rooms_bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--streams", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--nodes", default="1,2,4",
                        help="web node counts of the cluster part (empty: skip it)")
    parser.add_argument("--sockets", type=int, default=400)
    parser.add_argument("--cluster-events", type=int, default=10_000)
    parser.add_argument("--redis-cluster", action="store_true",
                        help="the cluster-wide part on a local 3-master Redis Cluster too")
    args = parser.parse_args(argv)
    infra.check_services()
    teardown.on_signals()  # SIGTERM, Ctrl-C: what the run started removed (bench/teardown.py)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Herald rooms bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"load average {load}")
    nodes = [int(n) for n in str(args.nodes).split(",") if n.strip()]
    try:
        asyncio.run(run(Report(), events=args.events, streams=args.streams, reps=args.reps,
                        nodes=nodes, sockets=args.sockets,
                        cluster_events=args.cluster_events, redis_cluster=args.redis_cluster))
    finally:
        teardown.clean()  # what the run left, its Redis keys included
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
