"""The relay's meter: what workers published and what failed, counted in Redis.

Workers have no HTTP port, so they count into a hash `<socketio channel>:metrics`
that every web node reads at scrape time (app/api/metrics.py).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence

import redis

from app.core import names
from app.core.redisclients import quick_redis
from app.outbox.relay import RelayReport

log = logging.getLogger("herald.metrics")


def redis_key(channel: str, *parts: str) -> str:
    """A Redis key of Herald's that belongs to Socket.IO channel `channel`:
    `<channel>:<part>:<part>…` (every key of this module and of app.outbox.liveness is
    made here, through app.core.names: it starts with the namespace).

    The channel is the key's hash tag (`{<channel>}:…`): on a Redis Cluster all these keys
    share a slot, so the transactions and MGETs over several of them work there too."""
    tag = channel.replace("{", "").replace("}", "")
    return names.key(f"{{{tag}}}", ":".join(parts))


def counters_key(channel: str) -> str:
    """The Redis hash holding the relay's counters for one deployment (one channel)."""
    return redis_key(channel, "metrics")


RATE_BUCKET = 10  # seconds per sample of the relay rate (app.outbox.liveness reads them)
RATE_KEEP = 20 * 60  # seconds a sample lives (the console shows the last 15 minutes)


def rate_key(channel: str, bucket: int) -> str:
    """The hash of one RATE_BUCKET-second sample: published, rejected, pending; expiring."""
    return redis_key(channel, "rate", str(bucket))


def heartbeats_key(channel: str, kind: str) -> str:
    """The sorted set of the `kind` ("worker", "web") heartbeats: member -> expiry time."""
    return redis_key(channel, "heartbeats", kind)


def heartbeat_key(channel: str, kind: str, member: str) -> str:
    """One process's heartbeat (JSON), expiring unless renewed."""
    return redis_key(channel, "heartbeat", kind, member)


class RelayMeter:
    """Counts what the relay did into Redis; a metrics failure never fails or slows the relay.

    Increments that Redis did not take (it is down: exactly when `transport_down` is
    worth counting) are kept in the process and added with the next write that works.
    """

    def __init__(self, redis_client: redis.Redis[bytes], *, channel: str) -> None:
        self.redis = redis_client
        self.channel = channel
        self.key = counters_key(channel)
        self.unsent: Counter[str] = Counter()

    def _incr(self, fields: dict[str, int]) -> None:
        self.unsent.update({k: v for k, v in fields.items() if v})
        if not self.unsent:
            return
        try:
            pipe = self.redis.pipeline(transaction=True)
            for name, amount in self.unsent.items():
                pipe.hincrby(self.key, name, amount)
            self._sample(pipe)
            pipe.execute()
        except Exception as exc:
            log.debug("relay metrics kept for later error=%s", type(exc).__name__)
            return
        self.unsent.clear()

    def _sample(self, pipe: redis.client.Pipeline[bytes]) -> None:
        """The relay rate for the console: what goes out now, added to this moment's sample."""
        sample = {name: self.unsent[key] for name, key in
                  (("published", "published"), ("rejected", "failures:rejected"))
                  if self.unsent[key]}
        if sample:
            key = rate_key(self.channel, int(time.time()) // RATE_BUCKET)
            for name, amount in sample.items():
                pipe.hincrby(key, name, amount)
            pipe.expire(key, RATE_KEEP)

    def published(self, events: Sequence[object]) -> None:
        """`relay(on_published=...)`: called after each batch went out."""
        self._incr({"published": len(events), "batches": 1})

    def count(self, events: Sequence[object]) -> None:
        """Like `published`, but kept in the process until `flush` (or the next write):
        a relay thread that runs a pass per commit flushes when idle or every so often,
        instead of paying a Redis round trip per batch."""
        self.unsent.update({"published": len(events), "batches": 1})

    def flush(self) -> None:
        """Send what `count` (or a failed write) kept; never raises."""
        self._incr({})

    def swept(self, when: float) -> None:
        """A worker's sweep went through every stream at `when` (Unix time)."""
        try:
            self.redis.hset(self.key, "last_sweep", f"{when:.3f}")
        except Exception as exc:
            log.debug("sweep time not recorded error=%s", type(exc).__name__)

    def finish(self, report: RelayReport, *, flush: bool = True) -> None:
        """After a relay run: what failed (sent now, with anything kept, unless `flush` is
        False)."""
        fields = {"failures:rejected": len(report.rejected),
                  "failures:transport_down": 1 if report.transport_down else 0,
                  "streams_failed": len(report.failed)}
        if flush:
            self._incr(fields)
        else:
            self.unsent.update({k: v for k, v in fields.items() if v})


def relay_meter(redis_url: str, *, channel: str) -> RelayMeter:
    """A meter with its own fail-fast client (one per worker process or sweeper)."""
    return RelayMeter(quick_redis(redis_url), channel=channel)
