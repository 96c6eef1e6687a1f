"""Websocket per-message deflate (HERALD_WS_COMPRESSION): bytes on the wire and CPU.

Two web nodes as the Procfile starts them (`python -m app.web`), one with the
setting off, one with it on; the same load client (offering deflate) connects `sockets`
sockets to each, then `events` notifications go to all of them (the fan-out path).
Printed per delivery: bytes read from the TCP sockets by the clients, and the web node's
CPU time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.outbox.publisher import RedisPublisher
from bench.clients import token
from bench.env import CHANNEL, REDIS_URL
from bench.fanout_bench import Target, make_clients, next_records
from bench.infra import WebNode, start_all, stop_all
from bench.peers import NodeMissing, require_node
from bench.stats import Figure, Report, median


@dataclass(frozen=True)
class CompressionSizes:
    sockets: int = 500
    events: int = 20
    reps: int = 3


async def run(report: Report, factory: sessionmaker[Session], env: dict[str, str],
              sizes: CompressionSizes) -> None:
    report.section(f"Websocket compression (HERALD_WS_COMPRESSION), {sizes.sockets:,} sockets "
                   f"x {sizes.events} notifications, median of {sizes.reps}")
    try:
        require_node()
    except NodeMissing as exc:
        report.add(Figure("compression", "compression", float("nan"), "",
                          note=f"skipped: {exc}"))
        return
    users = await asyncio.to_thread(make_clients, factory, sizes.sockets)
    tokens = [token(u, "client") for u in users]
    nodes, publishers, targets = [], [], []
    for on in (False, True):
        channel = f"{CHANNEL}-deflate-{'on' if on else 'off'}"
        node = WebNode({**env, "HERALD_SOCKETIO_CHANNEL": channel,
                                "HERALD_WS_COMPRESSION": "true" if on else "false"})
        pub = RedisPublisher(REDIS_URL, channel=channel)
        nodes.append(node)
        publishers.append(pub)
        assert node.proc is None
        targets.append(Target(f"deflate {'on' if on else 'off'}", node.url, 0,
                              lambda rs, p=pub: asyncio.to_thread(p.publish, rs)))
    await asyncio.to_thread(start_all, *nodes)
    try:
        for node, target in zip(nodes, targets, strict=True):
            assert node.proc is not None
            target.pid = node.proc.pid
            await target.load.start()
            await target.load.connect(target.url, tokens, inflight=50, deflate=True)
            target.connected = sizes.sockets
        per: dict[str, dict[str, list[float]]] = {t.name: {"bytes": [], "cpu": []}
                                                  for t in targets}
        total = sizes.sockets * sizes.events
        for target in targets:
            await target.broadcast(next_records(1))  # warm-up
        for _ in range(sizes.reps):
            for target in targets:
                wire = await target.load.wire_bytes()
                _seconds, cpu = await target.broadcast(next_records(sizes.events))
                per[target.name]["bytes"].append((await target.load.wire_bytes() - wire) / total)
                per[target.name]["cpu"].append(cpu / total * 1e6)
        for target in targets:
            values = per[target.name]
            report.add(Figure("compression", f"{target.name}: bytes on the wire per delivery",
                              median(values["bytes"]), "B", values["bytes"]))
            report.add(Figure("compression", f"{target.name}: web node CPU per delivery",
                              median(values["cpu"]), "us", values["cpu"]))
    finally:
        for target in targets:
            await target.load.close()
        for pub in publishers:
            pub.close()
        await asyncio.to_thread(stop_all, *nodes)
