"""Nudge the Celery relay after a commit — at most one relay task waiting at a time.

Each commit used to send its own task, and under load the tasks queued up behind each
other (every task pays a transaction). Now a nudge first sets a "relay due" key in
Redis with SET NX: if it was already set, a relay task is already waiting and will see
this commit, so nothing is sent. The task deletes the key *before* it claims streams,
so a commit that lands after the claim finds the key gone and sends a new task. The
key expires on its own, and the workers' sweep catches anything a lost task left behind.
"""

from __future__ import annotations

import time
from functools import lru_cache

import redis

from app.redisconn import quick_redis

RELAY_TASK = "herald.relay"
DUE_TTL = 10  # seconds: a lost task delays nudges at most this long (the sweep runs anyway)
# After a failed nudge, skip nudging for this long: reaching a dead broker takes seconds
# (client retries), and the commit is already done; the workers' sweep relays meanwhile.
PAUSE_AFTER_FAILURE = 5.0
_paused_until = 0.0


class NudgePaused(Exception):
    """The broker was unreachable moments ago; this nudge was skipped (the sweep relays)."""


def due_key(queue: str) -> str:
    return f"herald:relay-due:{queue}"


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis[bytes]:
    return quick_redis(url)


def claim_due(url: str, queue: str) -> bool:
    """Mark a relay as due; False if one already was (then there is nothing to send)."""
    return bool(_client(url).set(due_key(queue), b"1", nx=True, ex=DUE_TTL))


def clear_due(url: str, queue: str) -> None:
    """Called by a relay task before it claims streams: later commits nudge again."""
    _client(url).delete(due_key(queue))


def celery_nudger(streams: list[str]) -> None:
    """Enqueue a relay unless one is already due; raises if the broker is unreachable."""
    global _paused_until
    if time.monotonic() < _paused_until:
        raise NudgePaused("broker unreachable moments ago")
    from workers.celery_app import celery_app, settings

    try:
        if not claim_due(settings.redis_url, settings.celery_queue):
            return
        try:
            celery_app.send_task(RELAY_TASK, args=[None], retry=False)
        except Exception:
            clear_due(settings.redis_url, settings.celery_queue)
            raise
    except Exception:
        _paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
        raise
