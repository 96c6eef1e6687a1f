"""End to end: commit -> nudge -> a Celery worker's relay thread -> Redis -> web node -> client.

Writer processes append events at a steady total rate, each in its own transaction,
with the real relay nudger (after commit, as the web app nudges). Each writer notes the
wall-clock time just before each event's COMMIT and hands them back at the end; the
client's latency is its receive time minus that (same machine, same clock: it includes
the commit itself). Each event also carries `t`, taken before writer.append is called:
a diagnostic figure from there includes the append's statements too. The first second
is warm-up. The listeners run in this process, which does nothing else meanwhile.
Also: one PATCH /api/projects/{id} over HTTP -> the project's client receives
`project-updated`, one at a time.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_session_factory
from app.core.settings import get_settings
from app.outbox import writer
from app.outbox.nudge import relay_nudger
from app.portal import projects
from bench.clients import Listener, token
from bench.stats import Figure, Report, median, percentile

WARMUP = 1.0


@dataclass(frozen=True)
class LatencySizes:
    rate: float
    duration: float
    reps: int
    streams: int
    threads: int  # writer processes
    updates: int
    core_writes: bool = True


def _users(factory: sessionmaker[Session], count: int, role: str) -> list[int]:
    with factory() as session, session.begin():
        return [int(projects.create_user(session, email=f"{role}-{uuid.uuid4().hex[:8]}@bench",
                                       role=role, name="bench").id) for _ in range(count)]


# The rows writer.append writes for one event (the head, the mark, the event), as two
# statements on a plain connection.
_BUMP = ("WITH bump AS (UPDATE streams SET head = head + 1 WHERE name = %s "
         "RETURNING name, head, epoch), "
         "mark AS (INSERT INTO pending_streams AS p (name, head, epoch, since) "
         "SELECT name, head, epoch, now() FROM bump "
         "ON CONFLICT (name) DO UPDATE SET head = excluded.head) "
         "SELECT head FROM bump")
_INSERT = ('INSERT INTO events (id, stream, "offset", type, payload, created_at) '
           "VALUES (%s, %s, %s, %s, %s::json, %s)")


def _core_append(conn: Any, stream: str, data: dict[str, Any]) -> None:
    """writer.append's rows without its Python cost: bump the head and mark the stream,
    insert the event."""
    [head] = conn.execute(_BUMP, (stream,)).fetchone()
    conn.execute(_INSERT, (str(uuid.uuid4()), stream, head, "notification",
                           json.dumps(data), datetime.now(UTC)))


def _write_paced(url: str, streams: list[str], rate: float, duration: float, index: int,
                 writers: int, core: bool, ready: Any, go: Any, start_at: Any,
                 results: Any) -> None:
    """One writer process: events index, index+writers, ... at their slots, each appended
    and committed in its own transaction, then nudged after its commit as the web app
    nudges (the real relay nudger). `core`: the same rows
    through two plain statements instead of writer.append. Sends back (written, errors)."""
    from app.core.db import make_engine

    engine = make_engine(url, pool_size=1, max_overflow=0)
    nudge = relay_nudger(get_settings())
    factory = make_session_factory(engine, nudge=nudge)
    raw = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"),
                          autocommit=False) if core else None
    with factory() as session:  # connect before the clock starts
        session.connection()
    ready.set()
    go.wait()
    start = start_at.value
    end = start + duration
    written: list[int] = []
    commits: dict[int, float] = {}  # seq -> wall-clock time just before its COMMIT
    errors: list[str] = []
    for seq in range(index, int(rate * duration), writers):
        slot = start + seq / rate
        delay = slot - time.time()
        if delay > 0:
            time.sleep(delay)
        elif time.time() > end:
            break
        stream = streams[seq % len(streams)]
        try:
            if raw is not None:
                with raw.transaction():
                    _core_append(raw, stream, {
                        "type": "info", "title": "bench", "message": f"event {seq}",
                        "seq": seq, "warm": time.time() < start + WARMUP, "t": time.time()})
                    commits[seq] = time.time()  # the block's end sends the COMMIT
                nudge([stream])
            else:
                with factory() as session, session.begin():
                    writer.append(session, stream, "notification",
                                  {"type": "info", "title": "bench", "message": f"event {seq}",
                                   "seq": seq, "warm": time.time() < start + WARMUP,
                                   "t": time.time()})
                    commits[seq] = time.time()  # the block's end sends the COMMIT
        except Exception as exc:  # reported, not raised: the run goes on
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        written.append(seq)
    results.put((written, commits, errors, time.time() - start))
    nudge.close()
    if raw is not None:
        raw.close()
    engine.dispose()


class PacedWriter:
    """`writers` processes appending to `streams` round-robin at `rate` events/s in total.

    Processes, not threads: writer.append costs milliseconds of CPU, and threads of the
    bench process would both cap the rate (the GIL) and delay the listeners' receive
    timestamps in the same process. Time-bounded: a writer that falls behind its
    schedule writes as fast as it can and stops at the end of the run, so the achieved
    rate is what the machine managed.
    """

    def __init__(self, url: str, streams: list[str], rate: float, duration: float,
                 writers: int, core: bool = False) -> None:
        self.url = url
        self.streams = streams
        self.rate = rate
        self.duration = duration
        self.writers = writers
        self.core = core
        self.written: set[int] = set()
        self.commits: dict[int, float] = {}
        self.errors: list[str] = []

    def run(self) -> float:
        """Write for `duration` seconds; returns the achieved rate (events/s)."""
        ctx = multiprocessing.get_context("spawn")
        go, start_at, results = ctx.Event(), ctx.Value("d", 0.0), ctx.Queue()
        readies = [ctx.Event() for _ in range(self.writers)]
        procs = [ctx.Process(target=_write_paced, daemon=True,
                             args=(self.url, self.streams, self.rate, self.duration, i,
                                   self.writers, self.core, readies[i], go,
                                   start_at,
                                   results))
                 for i in range(self.writers)]
        for proc in procs:
            proc.start()
        try:
            for ready in readies:
                if not ready.wait(60):
                    raise RuntimeError("a writer process did not start")
            start_at.value = time.time() + 0.1
            go.set()
            took = 0.0
            for _ in procs:
                written, commits, errors, elapsed = results.get(timeout=self.duration + 120)
                self.written.update(written)
                self.commits.update(commits)
                self.errors.extend(errors)
                took = max(took, elapsed)
        finally:
            for proc in procs:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
        return len(self.written) / took if took else 0.0


def _ensure_streams(factory: sessionmaker[Session], streams: list[str]) -> None:
    """The streams and their relay cursors exist before the writers start."""
    with factory() as session, session.begin():
        for stream in streams:
            writer.ensure_stream(session, stream)


async def steady_run(factory: sessionmaker[Session], url: str, sizes: LatencySizes
                     ) -> dict[str, float]:
    users = await asyncio.to_thread(_users, factory, sizes.streams, "client")
    from_call: list[float] = []  # from the writer.append call (`t`, in the payload)
    arrivals: dict[int, float] = {}  # seq -> receive time, after the warm-up
    received: set[int] = set()

    def on_event(name: str, args: tuple[Any, ...], at: float) -> None:
        payload = args[0] if args else None
        if name != "notification" or not isinstance(payload, dict) or "t" not in payload:
            return
        received.add(int(payload["seq"]))
        if not payload["warm"]:
            from_call.append(1000 * (at - float(payload["t"])))
            arrivals[int(payload["seq"])] = at

    listeners = [Listener(url, token(uid, "client"), on_event=on_event) for uid in users]
    for listener in listeners:
        await listener.connect()
    for listener in listeners:
        await listener.wait_connected()
    url_db = factory.kw["bind"].url.render_as_string(hide_password=False)
    streams = [f"user-{uid}" for uid in users]
    await asyncio.to_thread(_ensure_streams, factory, streams)
    paced = PacedWriter(url_db, streams, sizes.rate, sizes.duration + WARMUP, sizes.threads,
                        core=sizes.core_writes)
    achieved = await asyncio.to_thread(paced.run)
    deadline = time.monotonic() + 120
    while not paced.written <= received and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for listener in listeners:
        await listener.close()
    if paced.errors:
        raise RuntimeError(f"{len(paced.errors)} appends failed: {paced.errors[0]}")
    if not paced.written <= received:
        raise RuntimeError(f"only {len(received)} of {len(paced.written)} events arrived")
    # Commit -> client: from just before each event's COMMIT (reported by its writer).
    latencies = [1000 * (at - paced.commits[seq]) for seq, at in arrivals.items()]
    if not latencies:
        raise RuntimeError("no event was written after the warm-up")
    return {"rate": achieved, "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90), "p99": percentile(latencies, 99),
            "max": max(latencies), "n": len(latencies),
            "call_p50": percentile(from_call, 50), "call_p99": percentile(from_call, 99)}


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
                 sizes: LatencySizes, section: str) -> None:
    relayer = "one Celery worker's relay thread, woken by the nudge"
    writes = "plain INSERTs" if sizes.core_writes else "writer.append"
    report.section(f"End to end at a steady {sizes.rate:,.0f} events/s for {sizes.duration:g} s "
                   f"({sizes.threads} writer processes ({writes}, a commit and a nudge per "
                   f"event), {sizes.streams} streams, {relayer}, "
                   f"one web node), median of {sizes.reps}")
    runs = [await steady_run(factory, url, sizes) for _ in range(sizes.reps)]
    goal = sizes.rate >= 500
    report.add(Figure(section, "achieved write rate", median([r["rate"] for r in runs]),
                      "ev/s", [r["rate"] for r in runs]))
    report.add(Figure(section, "commit -> client p50", median([r["p50"] for r in runs]), "ms",
                      [r["p50"] for r in runs], note="goal <= 5 ms" if goal else ""))
    report.add(Figure(section, "commit -> client p90", median([r["p90"] for r in runs]), "ms",
                      [r["p90"] for r in runs]))
    report.add(Figure(section, "commit -> client p99", median([r["p99"] for r in runs]), "ms",
                      [r["p99"] for r in runs], note="goal <= 20 ms" if goal else ""))
    report.add(Figure(section, "commit -> client max", median([r["max"] for r in runs]), "ms",
                      [r["max"] for r in runs]))
    report.add(Figure(section, "(diagnostic) append call -> client p50",
                      median([r["call_p50"] for r in runs]), "ms",
                      [r["call_p50"] for r in runs],
                      note="from before writer.append: its statements and the COMMIT too"))
    report.add(Figure(section, "(diagnostic) append call -> client p99",
                      median([r["call_p99"] for r in runs]), "ms",
                      [r["call_p99"] for r in runs]))


async def run(report: Report, factory: sessionmaker[Session], url: str,
              sizes: LatencySizes, low_rate: float | None = None) -> None:
    await steady(report, factory, url, sizes, "e2e")
    if low_rate:
        await steady(report, factory, url, replace(sizes, rate=low_rate), "e2e-low")
    report.section(f"One update: PATCH /api/projects/{{id}} -> client receives "
                   f"project-updated, {sizes.updates} one at a time")
    e2e, http = await single_updates(factory, url, sizes.updates)
    report.add(Figure("update", "request sent -> client receives, median", median(e2e), "ms"))
    report.add(Figure("update", "request sent -> client receives, p90",
                      percentile(e2e, 90), "ms"))
    report.add(Figure("update", "HTTP round trip of the PATCH, median", median(http), "ms"))
