"""Redis clients for side channels (readiness, metrics, nudges) that must fail fast.

`quick_redis` makes one; `SideChannels` holds a web process's, opened once and closed by
the app's lifespan (no request handler creates a client of its own).
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.core.settings import Settings


def quick_redis(url: str) -> redis.Redis[bytes]:
    """A client that fails at once when Redis is away (redis-py retries for seconds)."""
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1,
                                retry=Retry(NoBackoff(), 0))


class SideChannels:
    """The quick clients of one process: the Socket.IO queue's Redis and, when it is another
    server, the Celery broker's. Connections open on first use."""

    def __init__(self, settings: Settings) -> None:
        self.sio = quick_redis(settings.sio_redis_url)
        self.broker = (quick_redis(settings.redis_url)
                       if settings.redis_url != settings.sio_redis_url else None)

    def named(self) -> dict[str, redis.Redis[bytes]]:
        """What /readyz checks: `redis` and, if separate, `broker`."""
        return {"redis": self.sio, **({"broker": self.broker} if self.broker else {})}

    def close(self) -> None:
        for client in self.named().values():
            client.close()
