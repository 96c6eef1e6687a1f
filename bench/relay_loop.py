"""A prototype, not Herald's path: one long-running relay loop woken by coalesced nudges.

`python -m bench.relay_loop` (started by the bench with DATABASE_URL and the web
node's channel): a committer LPUSHes to a Redis list after its commit; the loop BLPOPs,
deletes the list (every nudge before this point is covered by the pass that follows),
then relays every pending stream with app.outbox.relay.relay() and the real
RedisPublisher. N commits between two passes cost one pass. Used by `--relay-loop` to
show what coalescing the nudges would give, beside the Celery-task-per-commit figures.
"""

from __future__ import annotations

import signal
from typing import Any

import redis

from app.core.db import make_engine, make_session_factory
from app.core.settings import get_settings
from app.outbox.publisher import RedisPublisher
from app.outbox.relay import RelayPolicy, relay
from bench.env import NUDGES


def main() -> int:
    settings = get_settings()
    factory = make_session_factory(make_engine(settings.database_url, pool_size=2))
    publisher = RedisPublisher(settings.sio_redis_url, channel=settings.socketio_channel)
    client = redis.Redis.from_url(settings.redis_url)
    key = NUDGES
    stopping = False

    def stop(*_args: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    print("relay loop ready.", flush=True)
    while not stopping:
        if client.blpop([key], timeout=1) is None:
            continue
        client.delete(key)
        relay(session_factory=factory, publisher=publisher, policy=RelayPolicy())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
