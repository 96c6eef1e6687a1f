"""Reconnect storm: a web node holding `sockets` sockets is killed; they all reconnect, at
once, to another node with their positions, while `missed` events were written.

Each socket is in the `clients` room (its role stream). The first web node is SIGKILLed;
`missed` events are written to that stream (as already relayed: nobody got them live);
then the same users connect to a second web node with `positions: {"clients": {offset,
epoch}}` (the load client opens them all at once, as clients whose node died would).
Timed: from the first reconnect to the last socket having every missed event, in order
(a duplicate is allowed, a gap is a failure). Printed: that time, sockets recovered and
failed.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.outbox.replay import read_head
from bench.clients import token
from bench.env import CHANNEL
from bench.fanout_bench import ROOM, make_clients
from bench.fixtures import bulk_write, mark_dispatched
from bench.infra import WebNode, start_all, stop_all
from bench.peers import LoadClient, NodeMissing, require_node
from bench.stats import Figure, Report


@dataclass(frozen=True)
class StormSizes:
    sockets: int = 2000
    missed: int = 20


def _head(factory: sessionmaker[Session]) -> tuple[int, str]:
    with factory() as session, session.begin():
        head = read_head(session, ROOM)
        return head.offset, head.epoch


async def run(report: Report, factory: sessionmaker[Session], env: dict[str, str],
              sizes: StormSizes) -> None:
    report.section(f"Reconnect storm: {sizes.sockets:,} sockets of a killed web node reconnect "
                   f"at once to another, {sizes.missed} events missed each")
    try:
        require_node()
    except NodeMissing as exc:
        report.add(Figure("storm", "reconnect storm", float("nan"), "", note=f"skipped: {exc}"))
        return
    users = await asyncio.to_thread(make_clients, factory, sizes.sockets)
    tokens = [token(u, "client") for u in users]
    first = WebNode({**env, "HERALD_SOCKETIO_CHANNEL": f"{CHANNEL}-storm"})
    second = WebNode({**env, "HERALD_SOCKETIO_CHANNEL": f"{CHANNEL}-storm"})
    await asyncio.to_thread(start_all, first, second)
    before, after = LoadClient(), LoadClient()
    try:
        await before.start()
        await before.connect(first.url, tokens, inflight=50)
        offset, epoch = await asyncio.to_thread(_head, factory)
        assert first.proc is not None
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        items = [(ROOM, "notification", {"type": "info", "title": "missed", "message": str(i)})
                 for i in range(sizes.missed)]
        await asyncio.to_thread(bulk_write, factory, items)
        await asyncio.to_thread(mark_dispatched, factory, [ROOM])
        await after.start()
        answer = await after.ask({
            "cmd": "storm", "url": second.url, "tokens": tokens, "stream": ROOM,
            "after": offset, "expect": sizes.missed, "inflight": len(tokens),
            "positions": {ROOM: {"offset": offset, "epoch": epoch}}}, timeout=600)
        report.add(Figure("storm", "first reconnect -> last socket recovered",
                          float(answer["seconds"]) * 1000, "ms",
                          note=f"{answer['recovered']:,} recovered every missed event in "
                               f"order, {answer['failed']:,} failed"))
    finally:
        for load in (before, after):
            await load.close()
        await asyncio.to_thread(stop_all, first, second)
