"""Redis clients for side channels (readiness, metrics, nudges) that must fail fast."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def quick_redis(url: str) -> redis.Redis[bytes]:
    """A client that fails at once when Redis is away (redis-py retries for seconds)."""
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1,
                                retry=Retry(NoBackoff(), 0))
