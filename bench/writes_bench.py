"""The write path (issue 11): what a write pays beyond its PostgreSQL commit.

Side by side in one run, each a median over repetitions (every repetition listed):
- (reference) a bare PostgreSQL commit: psycopg, one `UPDATE` of one row + `COMMIT`;
- (reference) `GET /healthz` round trip: the web node's HTTP floor (no database);
- `POST /api/events` with one event, sequential, one keep-alive client;
- `POST /api/events` with batches of 1,000 events (10 streams), events/s;
- `writer.append` in this process, N events in one transaction: CPU and wall per event;
- `PATCH /api/projects/{id}` (an admin, progress) round trip.

The HTTP client is `http.client` on one keep-alive connection, the bodies encoded
beforehand: it costs ~40 µs of this process's CPU per request where httpx costs a few
hundred, so the figures are the server's. The web node is a real one (`python -m
app.web`, as the Procfile runs it) on the bench's database, nudging a Celery queue of its
own that no worker reads (the "relay due" mark then stays set: a nudge costs one Redis
round trip, as on a busy system).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.outbox import writer
from app.outbox.nudge import wake_key
from app.outbox.tables import Event
from app.portal import projects
from bench import infra
from bench.env import QUEUE, REDIS_URL
from bench.stats import Figure, Report, median
from testkit.clients import token

SECTION = "writes"
BATCH = 1000
BATCH_STREAMS = 10


@dataclass(frozen=True)
class WritesSizes:
    single: int  # sequential requests per repetition (POST one event, PATCH, commits)
    batches: int  # batches of BATCH events per repetition
    appends: int  # writer.append events in one transaction per repetition
    reps: int


class Client:
    """One keep-alive HTTP/1.1 connection; `call` answers (status, body bytes)."""

    def __init__(self, url: str, auth: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                               timeout=30)
        self.auth = f"Bearer {auth}"

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": self.auth}
        if body is not None:
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def touch(self) -> None:
        """An untimed request that (re)opens the connection: the server closes one idle
        for 5 s (uvicorn's keep-alive timeout)."""
        try:
            self.call("GET", "/healthz")
        except (http.client.HTTPException, ConnectionError):
            self.conn.close()
            self.call("GET", "/healthz")

    def close(self) -> None:
        self.conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc), its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Timed:
    """Round trips in ms, and the server's CPU ms per request over them."""

    def __init__(self, rtts: list[float], server_cpu: float) -> None:
        self.rtts, self.server_cpu = rtts, server_cpu


def _timed(calls: list[tuple[str, str, bytes | None]], client: Client, ok: set[int],
           pid: int | None = None) -> Timed:
    """Each call's round trip in ms, one after the other on `client`, and the CPU the
    server (`pid`) spent per call meanwhile (its nudges after a response included)."""
    client.touch()
    out = []
    cpu = cpu_seconds(pid) if pid is not None else 0.0
    for method, path, body in calls:
        start = time.perf_counter()
        status, answer = client.call(method, path, body)
        out.append(1000 * (time.perf_counter() - start))
        if status not in ok:
            raise RuntimeError(f"{method} {path}: {status} {answer[:300]!r}")
    if pid is not None:
        time.sleep(0.05)  # the last answer's nudge, after its response
        cpu = 1000 * (cpu_seconds(pid) - cpu) / len(calls)
    return Timed(out, cpu)


def bare_commits(url: str, count: int) -> list[float]:
    """A bare PostgreSQL commit round trip (one-row UPDATE + COMMIT), in ms."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit (id int PRIMARY KEY, n bigint)")
        conn.execute("INSERT INTO bench_commit VALUES (1, 0) ON CONFLICT DO NOTHING")
        conn.commit()
        out = []
        for _ in range(count):
            start = time.perf_counter()
            conn.execute("UPDATE bench_commit SET n = n + 1 WHERE id = 1")
            conn.commit()
            out.append(1000 * (time.perf_counter() - start))
        return out


def append_cost(factory: sessionmaker[Session], count: int, stream: str) -> tuple[float, float]:
    """(CPU ms, wall ms) per event of `count` writer.append calls in one transaction,
    commit included; this process's CPU (nothing else runs in it meanwhile)."""
    data = [{"projectId": 1, "progress": i % 101, "status": "active", "note": "x" * 40}
            for i in range(count)]
    cpu, wall = time.process_time(), time.perf_counter()
    with factory() as session, session.begin():
        for item in data:
            writer.append(session, stream, "project-updated", item, nudge=_no_nudge)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return 1000 * cpu / count, 1000 * wall / count


def _no_nudge(_streams: list[str]) -> None:
    return None


def _setup(factory: sessionmaker[Session]) -> tuple[int, int]:
    """An admin and a project of a client: (admin id, project id)."""
    tag = uuid.uuid4().hex[:8]
    with factory() as session, session.begin():
        admin = projects.create_user(session, email=f"admin-{tag}@bench", role="admin")
        client = projects.create_user(session, email=f"client-{tag}@bench", role="client")
        project = projects.create_project(session, name="writes", client_id=client.id,
                                        technician_ids=[])
        return admin.id, project.id


def _one_event_bodies(count: int, tag: str) -> list[tuple[str, str, bytes | None]]:
    return [("POST", "/api/events", json.dumps(
        {"stream": f"project-{900_000 + i % BATCH_STREAMS}", "type": "invoice-issued",
         "data": {"invoiceId": i, "run": tag, "total": "12.50"}}).encode())
        for i in range(count)]


def _batch_body(n: int, tag: str) -> bytes:
    return json.dumps([
        {"stream": f"project-{900_100 + i % BATCH_STREAMS}", "type": "invoice-issued",
         "data": {"invoiceId": n * BATCH + i, "run": tag, "total": "12.50"}}
        for i in range(BATCH)]).encode()


def _check_gapless(factory: sessionmaker[Session], streams: list[str]) -> int:
    """The events of `streams` have offsets 1..n each; answers how many there are."""
    total = 0
    with factory() as session:
        for stream in streams:
            offsets = list(session.scalars(select(Event.offset).where(Event.stream == stream)
                                           .order_by(Event.offset)))
            if offsets != list(range(1, len(offsets) + 1)):
                raise RuntimeError(f"{stream}: offsets are not 1..{len(offsets)}")
            total += len(offsets)
    return total


def measure(report: Report, factory: sessionmaker[Session], url: str, web_url: str,
            pid: int, sizes: WritesSizes) -> None:
    admin, project = _setup(factory)
    service = Client(web_url, token("billing", "service"))
    patcher = Client(web_url, token(admin, "admin"))
    health = Client(web_url, token(admin, "admin"))
    runs: dict[str, list[float]] = {k: [] for k in (
        "commit", "health", "one", "batch", "cpu", "wall", "patch",
        "health_cpu", "one_cpu", "batch_cpu", "patch_cpu")}
    try:
        # warm-up: connections, statement caches, the first nudge
        _timed(_one_event_bodies(20, "warm"), service, {201})
        _timed([("PATCH", f"/api/projects/{project}", b'{"progress": 1}')] * 5, patcher, {200})
        _timed([("GET", "/healthz", None)] * 20, health, {200})
        bare_commits(url, 20)
        append_cost(factory, 50, "project-899999")
        for rep in range(sizes.reps):
            tag = f"r{rep}"
            runs["commit"].append(median(bare_commits(url, sizes.single)))
            timed = _timed([("GET", "/healthz", None)] * sizes.single, health, {200}, pid)
            runs["health"].append(median(timed.rtts))
            runs["health_cpu"].append(timed.server_cpu)
            timed = _timed(_one_event_bodies(sizes.single, tag), service, {201}, pid)
            runs["one"].append(median(timed.rtts))
            runs["one_cpu"].append(timed.server_cpu)
            bodies = [_batch_body(n, tag) for n in range(sizes.batches)]
            timed = _timed([("POST", "/api/events", body) for body in bodies], service, {201},
                           pid)
            runs["batch"].append(sizes.batches * BATCH / (sum(timed.rtts) / 1000))
            runs["batch_cpu"].append(1000 * timed.server_cpu / BATCH)
            cpu, wall = append_cost(factory, sizes.appends, f"project-{899_000 + rep}")
            runs["cpu"].append(cpu)
            runs["wall"].append(wall)
            patches = [("PATCH", f"/api/projects/{project}",
                        json.dumps({"progress": i % 101}).encode())
                       for i in range(sizes.single)]
            timed = _timed(patches, patcher, {200}, pid)
            runs["patch"].append(median(timed.rtts))
            runs["patch_cpu"].append(timed.server_cpu)
    finally:
        for client in (service, patcher, health):
            client.close()
    stored = _check_gapless(factory, [f"project-{900_000 + i}" for i in range(BATCH_STREAMS)]
                            + [f"project-{900_100 + i}" for i in range(BATCH_STREAMS)])
    expected = sizes.reps * (sizes.single + sizes.batches * BATCH) + 20
    if stored != expected:
        raise RuntimeError(f"{stored} events stored, {expected} posted")

    def add(key: str, name: str, unit: str, note: str = "") -> None:
        report.add(Figure(SECTION, name, median(runs[key]), unit, runs[key], note))

    add("commit", "(reference) bare PostgreSQL commit round trip", "ms",
        "psycopg: UPDATE one row + COMMIT")
    add("health", "(reference) GET /healthz round trip", "ms", "the HTTP floor")
    add("health_cpu", "  web node CPU per GET /healthz", "ms")
    add("one", "POST /api/events, one event, round trip", "ms", "goal <= 2 ms")
    add("one_cpu", "  web node CPU per POST of one event", "ms")
    add("batch", f"POST /api/events, batches of {BATCH:,}", "ev/s", "goal >= 20,000 ev/s")
    add("batch_cpu", "  web node CPU per event in batches", "us")
    add("cpu", "writer.append, CPU per event", "ms", "goal <= 0.3 ms")
    add("wall", "writer.append, wall per event", "ms")
    add("patch", "PATCH /api/projects/{id} round trip", "ms", "goal <= 3 ms")
    add("patch_cpu", "  web node CPU per PATCH", "ms")


async def run(report: Report, factory: sessionmaker[Session], url: str,
              base: dict[str, str], sizes: WritesSizes) -> None:
    queue = f"{QUEUE}-writes"
    web = infra.WebNode({**base, "HERALD_CELERY_QUEUE": queue})
    await asyncio.to_thread(web.start)
    report.section(
        f"Writes: one web node, sequential requests on one keep-alive http.client connection, "
        f"median of {sizes.reps} (each repetition: {sizes.single} requests of each kind, "
        f"{sizes.batches} batches of {BATCH:,} over {BATCH_STREAMS} streams, "
        f"{sizes.appends:,} writer.append in one transaction)")
    try:
        assert web.proc is not None
        await asyncio.to_thread(measure, report, factory, url, web.url, web.proc.pid, sizes)
    finally:
        await asyncio.to_thread(web.stop)
        with redis.Redis.from_url(REDIS_URL) as client:
            client.delete(queue, wake_key(queue))
