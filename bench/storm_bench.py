"""Reconnect storm at scale: `sockets` sockets over two web nodes, one node SIGKILLed and
started again on the same port while events are written and relayed; its sockets reconnect
with their positions, spread over both nodes (testkit/storm.py has the scenario).

Printed: the time from the kill until the restarted node answers, until the last reconnect
got `connected`, and until the last socket (of either node) had every event of its
streams in order; sockets recovered and failed, gaps (must be 0), streams not recovered,
duplicates (allowed); and the replays' page requests against the database reads they cost,
by stream kind (a `user-{id}` stream has one socket: no sharing; the role and project
rooms are shared by every reconnecting socket in them: reads coalesced per stream page).
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy.orm import Session, sessionmaker

from app.core.redisclients import sync_redis
from app.outbox.nudge import RelayNudger
from bench.env import CHANNEL, QUEUE, REDIS_URL
from bench.infra import LOG_DIR, WebNode, Worker, start_all, stop_all
from bench.peers import NodeMissing, require_node
from bench.stats import Figure, Report
from testkit.storm import StormResult, StormSizes, WebNodeLike, run_storm

__all__ = ["StormSizes", "run"]


async def run(report: Report, factory: sessionmaker[Session], env: dict[str, str],
              sizes: StormSizes) -> None:
    report.section(f"Reconnect storm: {sizes.sockets:,} sockets over two web nodes, one "
                   f"SIGKILLed and restarted while {sizes.rate:g} events/s are written; its "
                   f"sockets reconnect with positions over both ({sizes.projects} project "
                   f"rooms, {sizes.per_socket} per socket, {sizes.missed} events missed per "
                   f"shared room)")
    try:
        node_bin = require_node()
    except NodeMissing as exc:
        report.add(Figure("storm", "reconnect storm", float("nan"), "", note=f"skipped: {exc}"))
        return
    queue = f"{QUEUE}-storm"
    env = {**env, "HERALD_SOCKETIO_CHANNEL": f"{CHANNEL}-storm", "HERALD_CELERY_QUEUE": queue}
    nodes = [WebNode(env), WebNode(env)]
    worker = Worker(env, queue)
    await asyncio.to_thread(start_all, *nodes, worker)
    nudger = RelayNudger(sync_redis(REDIS_URL), queue)

    def restart(node: WebNodeLike) -> WebNodeLike:
        again = WebNode(env, port=node.port)
        again.spawn()
        nodes.append(again)
        return again

    try:
        result = await run_storm(factory, (nodes[0], nodes[1]), restart, nudger, sizes,
                                 node_bin=node_bin, log_dir=LOG_DIR)
    finally:
        nudger.close()
        await asyncio.to_thread(stop_all, *nodes, worker)
    _print(report, result)


def _print(report: Report, r: StormResult) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    report.add(Figure("storm", "kill -> restarted node answers", r.restart_s * 1000, "ms"))
    report.add(Figure("storm", "kill -> last reconnect connected", r.reconnected_s * 1000, "ms",
                      note=f"{r.reconnected:,} reconnects of {r.killed:,} sockets, "
                           f"{r.failed_attempts:,} failed attempts retried (node down, or no "
                           f"`connected` within 30 s); "
                           f"connections lost by close code {r.lost}, of them sockets "
                           f"opened on the node not killed {r.survivor_lost}"))
    report.add(Figure("storm", "kill -> last socket has every event", r.recovered_s * 1000,
                      "ms", note=f"writer stopped -> last socket: {r.tail_s * 1000:,.0f} ms; "
                                 f"load average {load}"))
    report.add(Figure("storm", "sockets recovered, in order", r.complete, "sockets",
                      note=f"of {r.sockets:,}; {r.sockets - r.complete:,} failed; "
                           f"{r.written:,} events written"))
    report.add(Figure("storm", "gaps", r.gaps, "", note=(
        f"events before `connected` {r.early} (presence {r.presence_early}), "
        f"streams not recovered {r.resets}, "
        f"streams tracked {r.streams:,} of {r.expected_streams:,}"
        + (f"; writer errors: {r.errors[:3]}" if r.errors else ""))))
    report.add(Figure("storm", "duplicates (allowed)", r.duplicates, ""))
    for kind in sorted(r.pages):
        requests, reads = r.pages[kind]
        report.add(Figure("storm", f"page reads, {kind} streams", reads, "reads",
                          note=f"for {requests:,} pages asked by replaying sockets "
                               f"({requests / max(reads, 1):,.1f} per read)"))
