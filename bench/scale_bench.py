"""Scale (issue 16): what idle streams cost, side by side at a small and a large size.

For each size (1,000 and 1,000,000 streams by default) a database of its own is filled
with set-based SQL (generate_series): that many `user-{id}` streams, one delivered event
each, every relay cursor caught up. Then, with a real web node on it:
- the relay's claim with nothing pending (`relay()` in this process, publisher on a
  channel nobody listens to), median of several calls;
- `GET /api/admin/outbox` round trip, idle and with 5,000 events pending;
- `POST /api/events` batches of 1,000 events: into 1 stream, over 1,000 existing
  streams (random ones), over 1,000 new streams; events/s, and the CPU each batch cost
  the web node and PostgreSQL (the backends on that database; Linux /proc): on a shared
  machine the CPU is the steadier figure, the wall time waits for the other processes;
- the drain: 5,000 events POSTed to random streams (in batches of 1,000) while a relay
  thread in this process runs `relay()` in a loop, as a worker's relay thread does when
  nudged: from the first POST until the last of them is published, in ms, median of
  `--scale-reps` repetitions (each on streams drawn afresh), the two sizes' repetitions
  alternating (both databases and web nodes alive), so that a slower minute of a shared
  machine weighs on both sides of the ratio;
- the drain's two halves, in each repetition right after it: the same number of events
  POSTed to random streams with no relay running (the writes alone), then `relay()` until
  they are all published (the relay alone); the drain overlaps the two, so their ratios
  say which half makes the drain's;
- the same drain over as many distinct streams at both sizes: 5,000 events POSTed to
  random streams of 1,000 (or of the small size's count, if fewer) drawn afresh from
  the database (at 1,000 streams all of them).
  The drain above touches about 1,000 distinct streams at the small size and about 5,000
  at the large one, and both a batch's and the relay's work go by the distinct streams
  (a row to lock, raise and mark, a cursor to claim and advance): this one is the same
  work on both databases, so its ratio is what the idle streams cost.

The sizes are printed side by side with the ratio large / small. `python -m bench scale`
runs this part alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import Engine, text

from app.core.db import make_engine, make_session_factory
from app.core.migrate import upgrade
from app.outbox import relay as relay_mod
from app.outbox.nudge import wake_key
from app.outbox.publisher import RedisPublisher
from app.portal import projects
from bench import infra, teardown
from bench.env import PG_ADMIN_URL, QUEUE, REDIS_URL, RELAY_CHANNEL, RUN
from bench.stats import Figure, Report, median
from bench.writes_bench import Client, cpu_seconds
from testkit import pg, postgres
from testkit.clients import token

SECTION = "scale"
BATCH = 1000


@dataclass(frozen=True)
class ScaleSizes:
    small: int  # streams in the small database
    large: int  # streams in the large one
    events: int  # events posted to random streams, then drained (a multiple of BATCH)
    reps: int  # repetitions of the quick figures (claim, admin GET, batches)


@dataclass
class Measured:
    """One size's figures (each a list of repetitions)."""

    build: float = 0.0
    claim: list[float] | None = None
    admin_idle: list[float] | None = None
    admin_pending: list[float] | None = None
    one_stream: list[float] | None = None
    existing: list[float] | None = None
    new: list[float] | None = None
    one_stream_cpu: list[float] | None = None  # ms of web node + PostgreSQL CPU per batch
    existing_cpu: list[float] | None = None
    new_cpu: list[float] | None = None
    drain: list[float] | None = None  # ms, one per repetition
    posts_only: list[float] | None = None  # ms: the drain's POSTs with no relay running
    relay_only: list[float] | None = None  # ms: relay() alone on what those wrote
    drain_same: list[float] | None = None  # ms: the drain over min(1,000, small) streams


def build(url: str, streams: int) -> float:
    """`streams` caught-up streams with one event each, set-based; seconds it took.
    (Caught up: not pending, no row in `pending_streams`.)"""
    start = time.perf_counter()
    engine = make_engine(url, statement_timeout=0)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO streams (name, epoch, head, pruned_through, created_at) "
                "SELECT 'user-' || g, substr(md5(g::text), 1, 16), 1, 0, now() "
                "FROM generate_series(1, :n) AS g"), {"n": streams})
            conn.execute(text(
                "INSERT INTO relay_cursors (stream, dispatched, state, attempts) "
                "SELECT 'user-' || g, 1, 'active', 0 FROM generate_series(1, :n) AS g"),
                {"n": streams})
            conn.execute(text(
                'INSERT INTO events (id, stream, "offset", type, payload, created_at) '
                "SELECT gen_random_uuid()::text, 'user-' || g, 1, 'notification', "
                """'{"type":"info","title":"hello","message":""}'::json, now() """
                "FROM generate_series(1, :n) AS g"), {"n": streams})
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()
    return time.perf_counter() - start


def _relay_once(engine: Engine, publisher: RedisPublisher) -> relay_mod.RelayReport:
    return relay_mod.relay(session_factory=make_session_factory(engine), publisher=publisher,
                           policy=relay_mod.RelayPolicy())


def _batch(streams: list[str], tag: str) -> bytes:
    return json.dumps([{"stream": streams[i % len(streams)], "type": "notification",
                        "data": {"type": "info", "title": f"{tag}-{i}", "message": ""}}
                       for i in range(BATCH)]).encode()


class ServerCpu:
    """CPU seconds so far of the web node and of PostgreSQL's backends on its database."""

    def __init__(self, web_pid: int, engine: Engine) -> None:
        self.web_pid, self.engine = web_pid, engine

    def pids(self) -> list[int]:
        with self.engine.connect() as conn:
            backends = conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")).scalars().all()
        return [self.web_pid, *backends]

    @staticmethod
    def read(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # it ended
                total += cpu_seconds(pid)
        return total


def _post(client: Client, body: bytes) -> None:
    """POST a batch to /api/events; anything but 201 stops the bench."""
    status, answer = client.call("POST", "/api/events", body)
    if status != 201:
        raise RuntimeError(f"POST /api/events: {status} {answer[:300]!r}")


def _post_rate(client: Client, bodies: list[bytes], cpu: ServerCpu
               ) -> tuple[list[float], list[float]]:
    """Events/s of each body (a batch of BATCH) POSTed on its own, and the CPU ms it cost
    the web node and PostgreSQL (its nudge after the answer included)."""
    rates, cpus = [], []
    for body in bodies:
        client.touch()
        pids = cpu.pids()
        before = cpu.read(pids)
        start = time.perf_counter()
        _post(client, body)
        rates.append(BATCH / (time.perf_counter() - start))
        time.sleep(0.05)  # the nudge, after the answer
        cpus.append(1000 * (cpu.read(pids) - before))
    return rates, cpus


def _drain(engine: Engine, publisher: RedisPublisher, events: int) -> float:
    """Seconds for relay() to publish `events` pending events."""
    start = time.perf_counter()
    published = 0
    deadline = time.monotonic() + 900
    while published < events and time.monotonic() < deadline:
        published += _relay_once(engine, publisher).published
    if published != events:
        raise RuntimeError(f"drained {published} of {events} events")
    return time.perf_counter() - start


def _posted_and_drained(engine: Engine, publisher: RedisPublisher, client: Client,
                        bodies: list[bytes], events: int) -> float:
    """Seconds from the first POST of `bodies` until a relay thread running meanwhile
    has published their `events` events."""
    published = [0]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set() and published[0] < events:
            done = _relay_once(engine, publisher).published
            published[0] += done
            if not done:
                time.sleep(0.001)

    start = time.perf_counter()
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    for body in bodies:
        _post(client, body)
    thread.join(900)
    stop.set()
    if published[0] != events:
        raise RuntimeError(f"drained {published[0]} of {events} events")
    return time.perf_counter() - start


def _gets(client: Client, count: int) -> list[float]:
    client.touch()
    out = []
    for _ in range(count):
        start = time.perf_counter()
        status, answer = client.call("GET", "/api/admin/outbox")
        out.append(1000 * (time.perf_counter() - start))
        if status != 200:
            raise RuntimeError(f"GET /api/admin/outbox: {status} {answer[:300]!r}")
    return out


class SizeRun:
    """One size's database (built with `streams` caught-up streams), web node, clients
    and relay engine, alive from `open()` to `close()`: the two sizes' drains alternate."""

    def __init__(self, streams: int, sizes: ScaleSizes, admin_url: str) -> None:
        self.streams, self.sizes, self.admin_url = streams, sizes, admin_url
        self.url = pg.create_database(admin_url, f"herald_bench_{RUN}_scale_{streams}")
        self.queue = f"{QUEUE}-scale-{streams}"
        self.web: infra.WebNode | None = None
        self.engine = make_engine(self.url, pool_size=2, max_overflow=2, statement_timeout=0)
        self.publisher = RedisPublisher(REDIS_URL, channel=RELAY_CHANNEL)
        self.service: Client | None = None
        self.operator: Client | None = None
        self.out = Measured()
        self.rng = random.Random(streams)

    def open(self) -> None:
        upgrade(self.url)
        self.web = infra.WebNode({"DATABASE_URL": self.url,
                                  "HERALD_SOCKETIO_CHANNEL": RELAY_CHANNEL,
                                  "HERALD_CELERY_QUEUE": self.queue})
        self.web.spawn()
        self.out.build = build(self.url, self.streams)
        self.web.wait_ready()
        print(f"  ({self.streams:,} streams built in {self.out.build:.1f} s)", flush=True)
        with make_session_factory(self.engine)() as session, session.begin():
            admin = projects.create_user(session, email=f"admin-{uuid.uuid4().hex[:8]}@bench",
                                         role="admin").id
        self.service = Client(self.web.url, token("billing", "service"))
        self.operator = Client(self.web.url, token(admin, "admin"))

    def figures(self) -> None:
        """Everything but the drains: claim, admin GETs, batches."""
        assert self.web is not None and self.web.proc is not None
        assert self.service is not None and self.operator is not None
        sizes, streams, rng, out = self.sizes, self.streams, self.rng, self.out
        engine, publisher, service = self.engine, self.publisher, self.service
        _relay_once(engine, publisher)  # warm-up: connection, statements
        claims = []
        for _ in range(sizes.reps):
            start = time.perf_counter()
            report = _relay_once(engine, publisher)
            claims.append(1000 * (time.perf_counter() - start))
            assert report.published == 0
        out.claim = claims
        _gets(self.operator, 2)
        out.admin_idle = _gets(self.operator, sizes.reps)
        cpu = ServerCpu(self.web.proc.pid, engine)
        # 1,000 distinct existing streams per batch (random draws would repeat: about
        # 632 distinct of 1,000 at the small size); all of them when there are fewer
        picks = min(BATCH, streams)
        distinct = [_batch([f"user-{k}" for k in rng.sample(range(1, streams + 1), picks)],
                           f"e{n}") for n in range(sizes.events // BATCH)]
        out.existing, out.existing_cpu = _post_rate(service, distinct, cpu)
        out.admin_pending = _gets(self.operator, sizes.reps)
        _drain(engine, publisher, sizes.events)
        out.one_stream, out.one_stream_cpu = _post_rate(
            service, [_batch([f"project-{n + 1}"], f"o{n}") for n in range(sizes.reps)], cpu)
        fresh = [[f"ticket-{n * BATCH + i + 1}" for i in range(BATCH)]
                 for n in range(sizes.reps)]
        out.new, out.new_cpu = _post_rate(service, [_batch(names, f"n{n}")
                                                    for n, names in enumerate(fresh)], cpu)
        while _relay_once(engine, publisher).published:  # the drains start caught up
            pass

    def drain(self, rep: int) -> None:
        """One POST-and-relay drain on streams drawn afresh, added to `out.drain`; then its
        two halves apart, on other streams drawn afresh: the POSTs with no relay running
        (`out.posts_only`), and relay() alone on what they wrote (`out.relay_only`); then
        the same drain over as many random streams as the small size has, at most 1,000
        (`out.drain_same`)."""
        assert self.service is not None
        out, events = self.out, self.sizes.events
        bodies = [self._random_batch(f"d{rep}-{n}") for n in range(events // BATCH)]
        self.service.touch()
        ms = 1000 * _posted_and_drained(self.engine, self.publisher, self.service, bodies,
                                        events)
        out.drain = [*(out.drain or []), ms]
        bodies = [self._random_batch(f"h{rep}-{n}") for n in range(events // BATCH)]
        self.service.touch()
        start = time.perf_counter()
        for body in bodies:
            _post(self.service, body)
        out.posts_only = [*(out.posts_only or []), 1000 * (time.perf_counter() - start)]
        out.relay_only = [*(out.relay_only or []),
                          1000 * _drain(self.engine, self.publisher, events)]
        some = self.rng.sample(range(1, self.streams + 1), min(BATCH, self.sizes.small))
        bodies = [self._random_batch(f"s{rep}-{n}", some) for n in range(events // BATCH)]
        self.service.touch()
        ms = 1000 * _posted_and_drained(self.engine, self.publisher, self.service, bodies,
                                        events)
        out.drain_same = [*(out.drain_same or []), ms]

    def _random_batch(self, tag: str, among: Sequence[int] | None = None) -> bytes:
        """A batch of events to random `user-{k}` streams: any of the database's, or those
        of `among`."""
        ks = among if among is not None else range(1, self.streams + 1)
        return _batch([f"user-{self.rng.choice(ks)}" for _ in range(BATCH)], tag)

    def close(self) -> None:
        for client in (self.service, self.operator):
            if client is not None:
                client.close()
        if self.web is not None:
            self.web.stop()
        self.publisher.close()
        self.engine.dispose()
        pg.drop_database(self.admin_url, self.url)
        with redis.Redis.from_url(REDIS_URL) as keys:
            keys.delete(self.queue, wake_key(self.queue))


def measure_sizes(sizes: ScaleSizes, admin_url: str = PG_ADMIN_URL
                  ) -> tuple[Measured, Measured]:
    """Both sizes' figures. The drains, the figure compared as a ratio, alternate between
    the two sizes (small, large, small, ...), both databases alive: a slower minute of a
    shared machine weighs on both sides, not on one."""
    runs: list[SizeRun] = []
    try:
        for streams in (sizes.small, sizes.large):
            runs.append(SizeRun(streams, sizes, admin_url))
            runs[-1].open()
            runs[-1].figures()
        for rep in range(sizes.reps):
            for run in runs:
                run.drain(rep)
    finally:
        for run in runs:
            run.close()
    return runs[0].out, runs[1].out


# The figures measured in alternation, repetition by repetition (`SizeRun.drain`).
PAIRED = frozenset({"drain", "posts_only", "relay_only", "drain_same"})


def report_sizes(report: Report, sizes: ScaleSizes, small: Measured, large: Measured,
                 section: str = SECTION) -> None:
    s, b = f"{sizes.small:,}", f"{sizes.large:,}"

    def pair(key: str, name: str, unit: str, goal: str = "", higher: bool = False) -> None:
        a, z = getattr(small, key), getattr(large, key)
        av = median(a) if isinstance(a, list) else float(a)
        zv = median(z) if isinstance(z, list) else float(z)
        report.add(Figure(section, f"{name} at {s}", av, unit,
                          a if isinstance(a, list) else []))
        report.add(Figure(section, f"{name} at {b}", zv, unit,
                          z if isinstance(z, list) else [], goal))
        ratio = zv / av if av else float("nan")
        if key in PAIRED and isinstance(a, list) and isinstance(z, list) \
                and len(a) == len(z) > 1 and all(a):
            # measured in alternation: each repetition's own ratio, and their median
            ratios = [y / x for x, y in zip(a, z, strict=True)]
            report.add(Figure(section, f"  ratio {b} / {s}, each pair", median(ratios), "x",
                              ratios))
            return
        report.add(Figure(section, f"  ratio {b} / {s}", ratio, "x",
                          note="(higher is better)" if higher else ""))

    pair("claim", "relay claim, nothing pending", "ms", f"goal <= 5 ms at {b}")
    pair("drain", f"POST {sizes.events:,} events to random streams, all relayed", "ms",
         f"goal <= 1.5x the {s} time")
    pair("posts_only", "  its POSTs alone, no relay running", "ms")
    pair("relay_only", f"  relay() alone on {sizes.events:,} events of random streams", "ms")
    pair("drain_same", f"the same drain over {min(BATCH, sizes.small):,} random streams of "
         "each database (the same work)", "ms")
    pair("admin_idle", "GET /api/admin/outbox, idle", "ms", "goal <= 50 ms")
    pair("admin_pending", f"GET /api/admin/outbox, {sizes.events:,} pending", "ms",
         "goal <= 50 ms")
    pair("one_stream", "POST 1,000 events into 1 stream", "ev/s", higher=True)
    pair("existing", "POST 1,000 events over 1,000 existing streams", "ev/s",
         "goal >= 15,000 ev/s", higher=True)
    pair("new", "POST 1,000 events over 1,000 new streams", "ev/s", "goal >= 15,000 ev/s",
         higher=True)
    for key, name in (("one_stream_cpu", "into 1 stream"),
                      ("existing_cpu", "over 1,000 existing streams"),
                      ("new_cpu", "over 1,000 new streams")):
        pair(key, f"  CPU per batch {name} (web node + PostgreSQL)", "ms")


# A PostgreSQL given the memory a million streams need (`--scale-pg sized`), as
# docs/scaling.md advises: the streams, their relay cursors and the events' indexes
# (about 700 MB at a million streams) fit in its buffer cache, WAL's full-page images
# are compressed, and the checkpoints are spaced as for a write-heavy server.
SIZED = {"shared_buffers": "1GB", "wal_compression": "lz4", "max_wal_size": "4GB",
         "checkpoint_timeout": "15min"}


async def run(report: Report, sizes: ScaleSizes, servers: str = "shared") -> None:
    """The scale figures on the bench's PostgreSQL server (`shared`), on a private one
    started with SIZED (`sized`), or on both one after the other (`both`)."""
    if servers in ("shared", "both"):
        report.section(
            f"Scale: {sizes.small:,} vs {sizes.large:,} caught-up streams (one event each, "
            f"built with generate_series), a web node each, relay() in this process; claim, "
            f"admin GET, batches and the POST-and-relay drain median of {sizes.reps}; on "
            f"the bench's PostgreSQL server ({_settings(PG_ADMIN_URL)})")
        small, large = await asyncio.to_thread(measure_sizes, sizes)
        report_sizes(report, sizes, small, large)
    if servers in ("sized", "both"):
        restore = reserve_huge_pages(SIZED_SHARED_MB)
        unregister = teardown.also(restore)  # a signal meanwhile puts the setting back too
        try:
            await _sized(report, sizes)
        finally:
            restore()
            unregister()


async def _sized(report: Report, sizes: ScaleSizes) -> None:
    """The scale figures on a private server started with SIZED."""
    free = _huge_pages_free()
    try:
        server = await asyncio.to_thread(postgres.start_private, SIZED)
    except postgres.NoServerBinaries as exc:
        print(f"\n(scale on a sized PostgreSQL skipped: {exc})", flush=True)
        return
    forget = teardown.also(server.discard)  # a signal meanwhile discards it too
    try:
        huge = free - _huge_pages_free()
        memory = (f"shared memory in {huge:,} MB of huge pages" if huge > 0 else
                  "shared memory not in huge pages: too few could be reserved, "
                  "vm.nr_hugepages")
        report.section(
            f"Scale, the same on a private PostgreSQL sized for "
            f"{sizes.large:,} streams ({_settings(server.url)}; {memory})")
        small, large = await asyncio.to_thread(measure_sizes, sizes, server.url)
        report_sizes(report, sizes, small, large, section=f"{SECTION}-sized")
    finally:
        await asyncio.to_thread(server.discard)
        forget()


NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
# The sized server's shared memory: 1 GB of shared_buffers and the rest (1,074 MB in all
# here), with room to spare.
SIZED_SHARED_MB = 1024 + 128


def reserve_huge_pages(mb: int) -> Callable[[], None]:
    """Have the kernel hold at least `mb` MB of free huge pages for the server about to
    start (raising `vm.nr_hugepages`: root only), as docs/scaling.md advises for a server
    sized for a million streams; returns what puts the setting back as it was (once the
    server is gone, its pages are free again). Where the setting cannot be raised (not
    root, no such file), nothing is reserved: the section's title says whether the
    server's memory is in huge pages."""
    try:
        before = int(NR_HUGEPAGES.read_text())
        size_mb = _meminfo().get("Hugepagesize", 0) // 1024
        missing = -(-(mb - _huge_pages_free()) // size_mb) if size_mb else 0
        if missing <= 0:
            return lambda: None
        NR_HUGEPAGES.write_text(f"{before + missing}\n")
    except (OSError, ValueError):
        return lambda: None
    print(f"  (vm.nr_hugepages {before} -> {before + missing} for the sized server's run)",
          flush=True)

    def restore() -> None:
        with contextlib.suppress(OSError):
            NR_HUGEPAGES.write_text(f"{before}\n")
    return restore


def _meminfo() -> dict[str, int]:
    """/proc/meminfo's figures (kB, or counts); empty where there is none."""
    try:
        with open("/proc/meminfo") as f:
            return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)}
    except (OSError, ValueError):
        return {}


def _huge_pages_free() -> int:
    """MB of huge pages the kernel holds for whoever asks (free and not yet reserved by a
    process: /proc/meminfo); 0 where there are none or no such file. PostgreSQL's default
    `huge_pages=try` puts its shared memory there when there are enough."""
    info = _meminfo()
    pages = info.get("HugePages_Free", 0) - info.get("HugePages_Rsvd", 0)
    return pages * info.get("Hugepagesize", 0) // 1024


def _settings(admin_url: str) -> str:
    """The server's settings that the scale figures depend on, as `name=value`."""
    engine = make_engine(admin_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                "('shared_buffers', 'wal_compression', 'max_wal_size', "
                "'checkpoint_timeout') ORDER BY name")).all()
    finally:
        engine.dispose()
    return ", ".join(f"{name}={value}" for name, value in rows)
