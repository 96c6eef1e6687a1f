"""Relay throughput: relay() with the real RedisPublisher, beside the raw PUBLISH ceiling.

The events are written once (writer.append, big transactions) and relayed once per
repetition: resetting every relay cursor to 0 makes the same events pending again.
Each repetition measures, back to back on the same Redis and the same messages:
  1. the ceiling: the pre-built Socket.IO messages, pipelined PUBLISH through redis-py,
     nothing else;
  2. (diagnostic) the same messages through RedisPublisher's own sending (its RESP
     packing, one write per batch, every reply read): the relay's floor without the
     database;
  3. relay() in this process (one process = one worker), PostgreSQL + RedisPublisher;
  4. the same through a real Celery worker (-c 2): one `herald.relay` task (one process
     relays), then two at once (two processes, claiming different streams with SKIP
     LOCKED), from send_task to the last cursor advanced (polled in the database).
"""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.outbox.publisher import (
    RedisPublisher,
    _encode,
    _reference_messages,
    row_messages,
    row_of,
    socketio_messages,
)
from app.outbox.relay import RelayPolicy, relay
from app.outbox.tables import EventRecord, PendingStream, RelayCursor, Stream
from bench import fixtures
from bench.env import REDIS_URL, RELAY_CHANNEL, RELAY_QUEUE
from bench.stats import Figure, Report, median

PIPELINE_CHUNK = 1000
OWN_CHUNK = 10_000


@dataclass(frozen=True)
class RelaySizes:
    events: int
    streams: int
    reps: int


def _event(i: int, streams: int) -> tuple[str, str, dict[str, Any]]:
    """Event number i: round-robin over the streams, a project update or a notification."""
    project = i % streams + 1
    if i % 2:
        return (f"project-{project}", "project-updated",
                {"projectId": project, "progress": i % 101, "status": "active"})
    return (f"project-{project}", "notification",
            {"type": "info", "title": "Project updated",
             "message": f"Project {project}: step {i} of the renovation is done, the next "
                        "visit is planned."})


def write_events(factory: sessionmaker[Session], sizes: RelaySizes, appended: int) -> float:
    """Write the events; the first `appended` through writer.append (returns its rate)."""
    items = [_event(i, sizes.streams) for i in range(sizes.events)]
    appended = min(appended, sizes.events)
    start = time.perf_counter()
    fixtures.append_all(factory, items[:appended])
    rate = appended / (time.perf_counter() - start) if appended else math.nan
    fixtures.bulk_write(factory, items[appended:])
    return rate


def reset_cursors(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        session.execute(update(RelayCursor).values(dispatched=0, attempts=0, state="active",
                                                   next_attempt_at=None, last_error=None))
        # behind again: pending again (a writer's head bump would have marked them)
        session.execute(delete(PendingStream))
        session.execute(insert(PendingStream).from_select(
            ["name", "head", "epoch", "since"],
            select(Stream.name, Stream.head, Stream.epoch, Stream.created_at)))


def pending_streams(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(
            select(func.count()).select_from(RelayCursor)
            .join(Stream, Stream.name == RelayCursor.stream)
            .where(Stream.head > RelayCursor.dispatched)) or 0)


class _Capture:
    """A publisher that keeps what the relay gives it, in order (to get the same messages)."""

    def __init__(self) -> None:
        self.events: list[EventRecord] = []

    def publish(self, events: Sequence[EventRecord]) -> None:
        self.events.extend(events)

    def close(self) -> None:
        return None


def relay_order(factory: sessionmaker[Session]) -> list[EventRecord]:
    reset_cursors(factory)
    capture = _Capture()
    relay(session_factory=factory, publisher=capture, policy=RelayPolicy())
    return capture.events


class Clock:
    """Wall-clock and this process's CPU seconds of a block (CPU time ignores the waits that
    a loaded machine adds: on a shared machine it is the steadier figure)."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def publish_raw(client: redis.Redis[bytes], messages: Sequence[str]) -> Clock:
    """Time to PUBLISH the messages, pipelined in chunks, results checked."""
    with Clock() as clock:
        _publish_raw(client, messages)
    return clock


def _publish_raw(client: redis.Redis[bytes], messages: Sequence[str]) -> None:
    for at in range(0, len(messages), PIPELINE_CHUNK):
        pipe = client.pipeline(transaction=False)
        for message in messages[at:at + PIPELINE_CHUNK]:
            pipe.publish(RELAY_CHANNEL, message)
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, Exception):
                raise result


def relay_in_process(factory: sessionmaker[Session], publisher: RedisPublisher,
                     expected: int) -> Clock:
    reset_cursors(factory)
    with Clock() as clock:
        report = relay(session_factory=factory, publisher=publisher, policy=RelayPolicy())
    if report.published != expected:
        raise RuntimeError(f"relay published {report.published} of {expected} events")
    return clock


def publish_own(publisher: RedisPublisher, streams: Sequence[str],
                messages: Sequence[bytes]) -> Clock:
    """Time to send the messages as RedisPublisher sends a batch (chunks of the relay's
    batch here: 100 streams x 100 events), replies checked."""
    with Clock() as clock:
        for at in range(0, len(messages), OWN_CHUNK):
            publisher._send(streams[at:at + OWN_CHUNK], messages[at:at + OWN_CHUNK])
    return clock


def relay_in_worker(factory: sessionmaker[Session], tasks: int = 1,
                    timeout: float = 120) -> float:
    """send_task `tasks` relay tasks at once (a worker with as many processes) -> the
    last cursor advanced."""
    from workers.celery_app import celery_app

    reset_cursors(factory)
    start = time.perf_counter()
    for _ in range(tasks):
        celery_app.send_task("herald.relay", args=[None], queue=RELAY_QUEUE, retry=False)
    deadline = start + timeout
    while pending_streams(factory):
        if time.perf_counter() > deadline:
            raise RuntimeError("the Celery worker did not relay the events in time")
        time.sleep(0.005)
    return time.perf_counter() - start


def run(report: Report, factory: sessionmaker[Session], sizes: RelaySizes,
        worker: bool) -> None:
    report.section(f"Relay throughput: {sizes.events:,} events over {sizes.streams} streams, "
                   f"PostgreSQL -> Redis, median of {sizes.reps}")
    append_rate = write_events(factory, sizes, appended=max(sizes.events // 10, 1))
    events = relay_order(factory)
    if len(events) != sizes.events:
        raise RuntimeError(f"expected {sizes.events} pending events, found {len(events)}")
    rows = [row_of(e) for e in events]
    with Clock() as build_rows:  # how the relay builds them: bytes straight from the rows
        row_messages(rows)
    with Clock() as build:
        messages = socketio_messages(events)
    with Clock() as build_emit:  # how they were built before: through emit() itself
        reference = [_encode(message) for message in _reference_messages(events)]
    if [json.loads(m) | {"host_id": 0} for m in messages[:100]] != \
            [json.loads(m) | {"host_id": 0} for m in reference[:100]]:
        raise RuntimeError("the relay's messages differ from python-socketio's")
    client = redis.Redis.from_url(REDIS_URL)
    publisher = RedisPublisher(REDIS_URL, channel=RELAY_CHANNEL)
    ceiling: list[float] = []
    own: list[float] = []
    inproc: list[float] = []
    celery: list[float] = []
    celery2: list[float] = []
    cpu_ceiling: list[float] = []
    cpu_own: list[float] = []
    cpu_relay: list[float] = []
    streams = [e.stream for e in events]
    # The set-up's objects (the events, both sets of messages) stay alive in this process:
    # out of the garbage collector's way, so that its full collections do not land in
    # the measurements (a relay worker holds none of them).
    gc.collect()
    gc.freeze()
    for _ in range(sizes.reps):
        raw = publish_raw(client, messages)
        ceiling.append(sizes.events / raw.wall)
        cpu_ceiling.append(1e6 * raw.cpu / sizes.events)
        sent = publish_own(publisher, streams, messages)
        own.append(sizes.events / sent.wall)
        cpu_own.append(1e6 * sent.cpu / sizes.events)
        ours = relay_in_process(factory, publisher, sizes.events)
        inproc.append(sizes.events / ours.wall)
        cpu_relay.append(1e6 * ours.cpu / sizes.events)
        if worker:
            celery.append(sizes.events / relay_in_worker(factory, 1))
            celery2.append(sizes.events / relay_in_worker(factory, 2))
    gc.unfreeze()
    publisher.close()
    client.close()
    report.add(Figure("relay", "raw pipelined PUBLISH of the same messages (ceiling)",
                      median(ceiling), "ev/s", ceiling, note="redis-py pipeline"))
    report.add(Figure("relay", "(diagnostic) same messages, RedisPublisher's own sending",
                      median(own), "ev/s", own, note="the relay without the database"))
    report.add(Figure("relay", "relay() in one process, RedisPublisher",
                      median(inproc), "ev/s", inproc))
    report.add(Figure("relay", "  ratio relay() / ceiling (median of per-rep ratios)",
                      100 * median([a / b for a, b in zip(inproc, ceiling, strict=True)]), "%",
                      [100 * a / b for a, b in zip(inproc, ceiling, strict=True)],
                      note="goal >= 50 %"))
    if celery:
        report.add(Figure("relay", "relay via a real Celery worker, 1 process", median(celery),
                          "ev/s", celery, note="one task: send_task -> last cursor advanced"))
        report.add(Figure("relay", "  ratio Celery worker / ceiling",
                          100 * median([a / b for a, b in zip(celery, ceiling, strict=True)]),
                          "%", [100 * a / b for a, b in zip(celery, ceiling, strict=True)],
                          note="goal >= 50 %"))
        report.add(Figure("relay", "relay via a real Celery worker, 2 processes",
                          median(celery2), "ev/s", celery2,
                          note="two tasks at once (-c 2), streams claimed with SKIP LOCKED"))
        report.add(Figure("relay", "  2 processes / 1 process",
                          median([a / b for a, b in zip(celery2, celery, strict=True)]), "x",
                          [a / b for a, b in zip(celery2, celery, strict=True)]))
    report.add(Figure("relay", "(CPU) ceiling: client CPU per event", median(cpu_ceiling), "us",
                      cpu_ceiling))
    report.add(Figure("relay", "(CPU) RedisPublisher's own sending, per event",
                      median(cpu_own), "us", cpu_own))
    report.add(Figure("relay", "(CPU) relay(): CPU per event in its process",
                      median(cpu_relay), "us", cpu_relay,
                      note="PostgreSQL's and Redis's own CPU not counted"))
    report.add(Figure("relay", "(set-up) writer.append, one big transaction",
                      append_rate, "ev/s", note=f"{max(sizes.events // 10, 1):,} events"))
    report.add(Figure("relay", "(diagnostic) building the messages from rows",
                      sizes.events / build_rows.wall, "ev/s", note="row_messages: the relay's"))
    report.add(Figure("relay", "(diagnostic) same from records (dicts + orjson)",
                      sizes.events / build.wall, "ev/s", note="how it was built before"))
    report.add(Figure("relay", "(diagnostic) same, through python-socketio emit()",
                      sizes.events / build_emit.wall, "ev/s", note="before that"))
