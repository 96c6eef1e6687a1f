"""End to end: commit -> Celery nudge -> Celery worker relay -> Redis -> web node -> client.

Writer threads in this process append events at a steady total rate, each in its own
transaction, with the real Celery nudger (after commit). Each event carries `t`, the
wall-clock time just before its COMMIT; the client's latency is its receive time - t
(same machine, same clock: it includes the commit itself). The first second is warm-up.
Also: one PATCH /api/projects/{id} over HTTP -> the project's client receives
`project-updated`, one at a time.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import httpx
import redis
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_session_factory
from app.core.settings import get_settings
from app.outbox import writer
from app.outbox.nudge import celery_nudger
from app.portal import projects
from bench.clients import Listener, token
from bench.env import NUDGES, QUEUE, REDIS_URL
from bench.stats import Figure, Report, median, percentile

WARMUP = 1.0


@dataclass(frozen=True)
class LatencySizes:
    rate: float
    duration: float
    reps: int
    streams: int
    threads: int
    updates: int


def _users(factory: sessionmaker[Session], count: int, role: str) -> list[int]:
    with factory() as session, session.begin():
        return [int(projects.create_user(session, email=f"{role}-{uuid.uuid4().hex[:8]}@bench",
                                       role=role, name="bench").id) for _ in range(count)]


class PacedWriter:
    """`threads` threads appending to `streams` round-robin at `rate` events/s in total.

    Time-bounded: a writer that falls behind its schedule writes as fast as it can and
    stops at the end of the run, so the achieved rate is what the machine managed.
    """

    def __init__(self, factory: sessionmaker[Session], streams: list[str], rate: float,
                 duration: float, threads: int) -> None:
        self.factory = factory
        self.streams = streams
        self.rate = rate
        self.duration = duration
        self.threads = threads
        self.written: set[int] = set()
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def _run(self, index: int, start: float) -> None:
        end = start + self.duration
        for seq in range(index, int(self.rate * self.duration), self.threads):
            slot = start + seq / self.rate
            delay = slot - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif time.perf_counter() > end:
                return
            stream = self.streams[seq % len(self.streams)]
            try:
                with self.factory() as session, session.begin():
                    writer.append(session, stream, "notification",
                                  {"type": "info", "title": "bench", "message": f"event {seq}",
                                   "seq": seq, "warm": time.perf_counter() < start + WARMUP,
                                   "t": time.time()})
            except Exception as exc:  # reported, not raised: the run goes on
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with self._lock:
                self.written.add(seq)

    def run(self) -> float:
        """Write for `duration` seconds; returns the achieved rate (events/s)."""
        start = time.perf_counter() + 0.05
        workers = [threading.Thread(target=self._run, args=(i, start), daemon=True)
                   for i in range(self.threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        return len(self.written) / (time.perf_counter() - start)


def loop_nudger(streams: list[str]) -> None:
    """The relay-loop prototype's nudge: one LPUSH (the loop coalesces them)."""
    _loop_redis().lpush(NUDGES, 1)


@functools.cache
def _loop_redis() -> redis.Redis[bytes]:
    return redis.Redis.from_url(REDIS_URL)


async def steady_run(factory: sessionmaker[Session], url: str, sizes: LatencySizes,
                     nudger: writer.Nudger | None = None) -> dict[str, float]:
    users = await asyncio.to_thread(_users, factory, sizes.streams, "client")
    latencies: list[float] = []
    received: set[int] = set()

    def on_event(name: str, args: tuple[Any, ...], at: float) -> None:
        payload = args[0] if args else None
        if name != "notification" or not isinstance(payload, dict) or "t" not in payload:
            return
        received.add(int(payload["seq"]))
        if not payload["warm"]:
            latencies.append(1000 * (at - float(payload["t"])))

    listeners = [Listener(url, token(uid, "client"), on_event=on_event) for uid in users]
    for listener in listeners:
        await listener.connect()
    for listener in listeners:
        await listener.wait_connected()
    real = celery_nudger(get_settings()) if nudger is None else None
    # None: the real one, a Celery task after each commit
    nudging = make_session_factory(factory.kw["bind"], nudge=nudger or real)
    paced = PacedWriter(nudging, [f"user-{uid}" for uid in users], sizes.rate,
                        sizes.duration + WARMUP, sizes.threads)
    try:
        achieved = await asyncio.to_thread(paced.run)
    finally:
        if real is not None:
            real.close()
    backlog = await asyncio.to_thread(queued_tasks)
    deadline = time.monotonic() + 120
    while not paced.written <= received and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for listener in listeners:
        await listener.close()
    await asyncio.to_thread(drop_queued_tasks)
    if paced.errors:
        raise RuntimeError(f"{len(paced.errors)} appends failed: {paced.errors[0]}")
    if not paced.written <= received:
        raise RuntimeError(f"only {len(received)} of {len(paced.written)} events arrived")
    if not latencies:
        raise RuntimeError("no event was written after the warm-up")
    return {"rate": achieved, "backlog": backlog, "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90), "p99": percentile(latencies, 99),
            "max": max(latencies), "n": len(latencies)}


def queued_tasks() -> int:
    """Celery tasks waiting in this run's queue."""
    with redis.Redis.from_url(REDIS_URL) as client:
        return int(client.llen(QUEUE))


def drop_queued_tasks() -> None:
    """Every event arrived: the nudges still queued have nothing left to relay."""
    with redis.Redis.from_url(REDIS_URL) as client:
        client.delete(QUEUE)


async def single_updates(factory: sessionmaker[Session], url: str, count: int
                         ) -> tuple[list[float], list[float]]:
    """(commit-to-client, HTTP round trip) in ms for `count` PATCHes, one at a time."""
    [admin] = await asyncio.to_thread(_users, factory, 1, "admin")
    [client] = await asyncio.to_thread(_users, factory, 1, "client")

    def make_project() -> int:
        with factory() as session, session.begin():
            return int(projects.create_project(session, name="bench", client_id=client,
                                             technician_ids=[]).id)

    project = await asyncio.to_thread(make_project)
    arrived: asyncio.Queue[tuple[dict[str, Any], float]] = asyncio.Queue()

    def on_event(name: str, args: tuple[Any, ...], at: float) -> None:
        if name == "project-updated":
            arrived.put_nowait((args[0], at))

    listener = Listener(url, token(client, "client"), on_event=on_event)
    await listener.connect()
    await listener.wait_connected()
    ack = await listener.call("join-project", project)
    if not ack.get("ok"):
        raise RuntimeError(f"join-project refused: {ack}")
    e2e: list[float] = []
    http: list[float] = []
    headers = {"Authorization": f"Bearer {token(admin, 'admin')}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as api:
        for i in range(count + 1):  # the first one warms the path up and is not counted
            progress = i % 101
            start = time.time()
            response = await api.patch(f"/api/projects/{project}", json={"progress": progress})
            done = time.time()
            response.raise_for_status()
            payload, at = await asyncio.wait_for(arrived.get(), 10)
            if payload["progress"] != progress:
                raise RuntimeError(f"expected progress {progress}, got {payload}")
            if i:
                e2e.append(1000 * (at - start))
                http.append(1000 * (done - start))
            await asyncio.sleep(0.05)
    await listener.close()
    return e2e, http


async def steady(report: Report, factory: sessionmaker[Session], url: str,
                 sizes: LatencySizes, section: str, loop: bool = False) -> None:
    relayer = ("the relay-loop PROTOTYPE (a relay loop woken by LPUSH, not Herald's path)"
               if loop else "one Celery worker -c 1")
    report.section(f"End to end at a steady {sizes.rate:,.0f} events/s for {sizes.duration:g} s "
                   f"({sizes.threads} writer threads, {sizes.streams} streams, {relayer}, "
                   f"one web node), median of {sizes.reps}")
    runs = [await steady_run(factory, url, sizes, loop_nudger if loop else None)
            for _ in range(sizes.reps)]
    goal = sizes.rate >= 500
    report.add(Figure(section, "achieved write rate", median([r["rate"] for r in runs]),
                      "ev/s", [r["rate"] for r in runs]))
    if not loop:
        report.add(Figure(section, "Celery nudge tasks queued when the writers stopped",
                          median([r["backlog"] for r in runs]), "tasks",
                          [r["backlog"] for r in runs],
                          note="nudges coalesce: at most one relay task due"))
    report.add(Figure(section, "commit -> client p50", median([r["p50"] for r in runs]), "ms",
                      [r["p50"] for r in runs], note="goal <= 10 ms" if goal else ""))
    report.add(Figure(section, "commit -> client p90", median([r["p90"] for r in runs]), "ms",
                      [r["p90"] for r in runs]))
    report.add(Figure(section, "commit -> client p99", median([r["p99"] for r in runs]), "ms",
                      [r["p99"] for r in runs], note="goal <= 50 ms" if goal else ""))
    report.add(Figure(section, "commit -> client max", median([r["max"] for r in runs]), "ms",
                      [r["max"] for r in runs]))


async def run(report: Report, factory: sessionmaker[Session], url: str,
              sizes: LatencySizes, low_rate: float | None = None,
              relay_loop: bool = False) -> None:
    await steady(report, factory, url, sizes, "e2e")
    if low_rate:
        await steady(report, factory, url, replace(sizes, rate=low_rate), "e2e-low")
    if relay_loop:
        await steady(report, factory, url, sizes, "e2e-loop", loop=True)
    report.section(f"One update: PATCH /api/projects/{{id}} -> client receives "
                   f"project-updated, {sizes.updates} one at a time")
    e2e, http = await single_updates(factory, url, sizes.updates)
    report.add(Figure("update", "request sent -> client receives, median", median(e2e), "ms"))
    report.add(Figure("update", "request sent -> client receives, p90",
                      percentile(e2e, 90), "ms"))
    report.add(Figure("update", "HTTP round trip of the PATCH, median", median(http), "ms"))
