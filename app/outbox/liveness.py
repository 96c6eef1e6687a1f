"""What is alive and how fast the relay goes, kept in Redis for the operators' console.

- **Heartbeats.** Every worker (its relay thread: workers/sweeper.py) and every web node
  writes a heartbeat every HERALD_HEARTBEAT_INTERVAL seconds: one JSON value per process,
  `<channel>:heartbeat:<kind>:<member>`, that expires after three intervals, and
  the member in a sorted set `<channel>:heartbeats:<kind>` scored by that expiry
  (so reading never scans the keyspace, and expired members are dropped as they are
  read). A process that stops cleanly removes its heartbeat; a killed one disappears
  when its heartbeat expires.
- **The relay rate.** The relay's meter (app.outbox.meter) adds what it publishes and
  what is refused to a hash per 10-second sample, `<channel>:rate:<n>`, that
  expires after 20 minutes; whoever computes the backlog for an operator (the console,
  `/metrics`) records the number of pending events in the current sample.
Everything here is on the Socket.IO Redis, next to the relay's counters; a Redis that
does not answer costs the console its numbers, never the relay its work.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from app.outbox.meter import RATE_BUCKET, RATE_KEEP, heartbeat_key, heartbeats_key, rate_key

log = logging.getLogger("herald.liveness")

WINDOW = 15 * 60  # seconds of relay rate the console shows
TTL_INTERVALS = 3  # a heartbeat lives this many intervals


def process_id() -> str:
    """`host:pid`, as /metrics labels a node."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeats:
    """Writes and reads the heartbeats of one deployment (one Socket.IO channel)."""

    def __init__(self, client: redis.Redis[bytes], channel: str) -> None:
        self.client = client
        self.channel = channel

    def beat(self, kind: str, member: str, fields: dict[str, Any], *, ttl: float) -> None:
        """`member` is alive for `ttl` more seconds; `fields` is what operators see of it."""
        now = time.time()
        body = json.dumps({**fields, "id": member, "seenAt": round(now, 3)})
        index = heartbeats_key(self.channel, kind)
        pipe = self.client.pipeline(transaction=True)
        pipe.set(heartbeat_key(self.channel, kind, member), body, px=max(1, int(ttl * 1000)))
        pipe.zadd(index, {member: now + ttl})
        pipe.expire(index, max(60, int(ttl * 10)))
        pipe.execute()

    def gone(self, kind: str, member: str) -> None:
        """`member` stops (a clean shutdown): off the list at once."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(heartbeat_key(self.channel, kind, member))
        pipe.zrem(heartbeats_key(self.channel, kind), member)
        pipe.execute()

    def alive(self, kind: str) -> list[dict[str, Any]]:
        """The `kind` processes whose heartbeat has not expired, by id."""
        index = heartbeats_key(self.channel, kind)
        self.client.zremrangebyscore(index, "-inf", time.time())
        members = [m.decode() for m in self.client.zrange(index, 0, -1)]
        if not members:
            return []
        values = self.client.mget([heartbeat_key(self.channel, kind, m) for m in members])
        out = []
        for member, value in zip(members, values, strict=True):
            if value is None:  # expired between the two reads
                continue
            try:
                out.append(json.loads(value))
            except ValueError:
                log.debug("unreadable heartbeat member=%s", member)
        return sorted(out, key=lambda entry: str(entry.get("id")))


class HeartbeatThread:
    """A daemon thread beating for one process every `interval` seconds until stopped;
    `fields()` is read at each beat. A Redis that does not answer skips that beat."""

    def __init__(self, heartbeats: Heartbeats, kind: str, member: str, *, interval: float,
                 fields: Callable[[], dict[str, Any]]) -> None:
        self.heartbeats = heartbeats
        self.kind = kind
        self.member = member
        self.interval = interval
        self.fields = fields
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"herald-heartbeat-{kind}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self.stopped.set()
        self.thread.join(timeout)
        try:
            self.heartbeats.gone(self.kind, self.member)
        except Exception as exc:
            log.debug("heartbeat not removed error=%s", type(exc).__name__)

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                self.heartbeats.beat(self.kind, self.member, self.fields(),
                                     ttl=self.interval * TTL_INTERVALS)
            except Exception as exc:
                log.debug("heartbeat skipped error=%s", type(exc).__name__)
            self.stopped.wait(self.interval)


def record_backlog(client: redis.Redis[bytes], channel: str, pending: int) -> None:
    """The number of pending events now, into the current rate sample; never raises."""
    key = rate_key(channel, int(time.time()) // RATE_BUCKET)
    try:
        pipe = client.pipeline(transaction=True)
        pipe.hset(key, "pending", str(int(pending)))
        pipe.expire(key, RATE_KEEP)
        pipe.execute()
    except Exception as exc:
        log.debug("backlog sample not recorded error=%s", type(exc).__name__)


def rate(client: redis.Redis[bytes], channel: str, *, window: int = WINDOW,
         now: float | None = None) -> dict[str, Any]:
    """The last `window` seconds in RATE_BUCKET-second samples, oldest first: events
    published and refused in each, and the pending events when one was recorded
    (None: nobody looked at the backlog then)."""
    now = time.time() if now is None else now
    last = int(now) // RATE_BUCKET
    buckets = list(range(last - window // RATE_BUCKET + 1, last + 1))
    pipe = client.pipeline(transaction=False)
    for bucket in buckets:
        pipe.hgetall(rate_key(channel, bucket))
    samples: list[dict[str, Any]] = []
    published = 0
    for bucket, raw in zip(buckets, pipe.execute(), strict=True):
        fields = {k.decode(): int(v) for k, v in raw.items()}
        published += fields.get("published", 0)
        samples.append({"at": bucket * RATE_BUCKET, "published": fields.get("published", 0),
                        "rejected": fields.get("rejected", 0),
                        "pending": fields.get("pending")})
    return {"bucketSeconds": RATE_BUCKET, "windowSeconds": window, "now": round(now, 3),
            "published": published, "perSecond": round(published / window, 3),
            "samples": samples}


def nodes(heartbeats: Heartbeats, *, now: float | None = None) -> dict[str, Any]:
    """The live workers (with the age of their relay thread's last sweep) and web nodes."""
    now = time.time() if now is None else now
    workers = heartbeats.alive("worker")
    for worker in workers:
        last = worker.get("lastSweepAt")
        worker["sweepAgeSeconds"] = round(max(0.0, now - last), 3) \
            if isinstance(last, int | float) else None
    return {"workers": workers, "webNodes": heartbeats.alive("web")}
