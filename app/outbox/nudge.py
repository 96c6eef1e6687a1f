"""Nudge the Celery relay after a commit — at most one relay task waiting at a time.

Each commit used to send its own task, and under load the tasks queued up behind each
other (every task pays a transaction). Now a nudge first sets a "relay due" key in
Redis with SET NX: if it was already set, a relay task is already waiting and will see
this commit, so nothing is sent. The task deletes the key *before* it claims streams,
so a commit that lands after the claim finds the key gone and sends a new task. The
key expires on its own, and the workers' sweep catches anything a lost task left behind.

A `CeleryNudger` is built from the Settings handed to the web app or the CLI, with the
Celery app made from the same Settings, and closed with them.
"""

from __future__ import annotations

import time
from typing import Protocol

import redis

from app.core.redisclients import quick_redis
from app.core.settings import Settings
from app.outbox.taskqueue import RELAY_TASK, make_celery

DUE_TTL = 10  # seconds: a lost task delays nudges at most this long (the sweep runs anyway)
# After a failed nudge, skip nudging for this long: reaching a dead broker takes seconds
# (client retries), and the commit is already done; the workers' sweep relays meanwhile.
PAUSE_AFTER_FAILURE = 5.0


class NudgePaused(Exception):
    """The broker was unreachable moments ago; this nudge was skipped (the sweep relays)."""


class TaskSender(Protocol):
    """What a nudger needs of Celery: `Celery.send_task`."""

    def send_task(self, name: str, args: list[object] | None = None, *,
                  retry: bool = ...) -> object: ...


def due_key(queue: str) -> str:
    return f"herald:relay-due:{queue}"


class DueMark:
    """The "relay due" key of one queue, in the broker's Redis."""

    def __init__(self, client: redis.Redis[bytes], queue: str, *, ttl: int = DUE_TTL) -> None:
        self.client, self.key, self.ttl = client, due_key(queue), ttl

    def claim(self) -> bool:
        """Mark a relay as due; False if one already was (then there is nothing to send)."""
        return bool(self.client.set(self.key, b"1", nx=True, ex=self.ttl))

    def clear(self) -> None:
        """Called by a relay task before it claims streams: later commits nudge again."""
        self.client.delete(self.key)

    def close(self) -> None:
        self.client.close()


def due_mark(redis_url: str, queue: str, *, ttl: int = DUE_TTL) -> DueMark:
    return DueMark(quick_redis(redis_url), queue, ttl=ttl)


class CeleryNudger:
    """`Nudger` that enqueues a relay unless one is already due; raises if the broker is
    unreachable, then skips the broker for PAUSE_AFTER_FAILURE seconds."""

    def __init__(self, sender: TaskSender, mark: DueMark) -> None:
        self.sender, self.mark = sender, mark
        self.paused_until = 0.0

    def __call__(self, streams: list[str]) -> None:
        if time.monotonic() < self.paused_until:
            raise NudgePaused("broker unreachable moments ago")
        try:
            if not self.mark.claim():
                return
            try:
                self.sender.send_task(RELAY_TASK, args=[None], retry=False)
            except Exception:
                self.mark.clear()
                raise
        except Exception:
            self.paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
            raise

    def close(self) -> None:
        self.mark.close()
        close = getattr(self.sender, "close", None)
        if close is not None:
            close()


def celery_nudger(settings: Settings) -> CeleryNudger:
    """The nudger of a web node or a CLI run: a Celery app and a due mark from `settings`."""
    return CeleryNudger(make_celery(settings), due_mark(settings.redis_url, settings.celery_queue))
