"""Nudge the relay after a commit: one Redis command that wakes a worker's relay thread.

Every Celery worker runs a relay thread in its main process (workers/sweeper.py) that
waits on a Redis list, `<queue>:relay-wake` (BLPOP), and relays every pending
stream when it is woken, or every HERALD_SWEEP_INTERVAL seconds when nobody wakes it.
A nudge pushes one wake-up on that list *unless one is already waiting* (a tiny Lua
script: `LLEN`, then `LPUSH` if empty — one command, one round trip, and the list never
holds more than one element, however many commits and however few workers). The
thread pops the wake-up *before* it claims streams, so a commit that lands after the
claim finds the list empty and pushes a new one: N commits during a pass cost one more
pass. A wake-up lost with its worker is harmless: the other workers' sweep relays
anyway, and the list never grows.

Before, each nudge was `SET NX` on a "relay due" mark plus a Celery `send_task`, and
the relay ran as a task in a prefork child: a broker round trip, the worker's queue
poll and the hand-off to a child, per pass. The `herald.relay` task is still there
(operators may send it), it is just no longer how commits reach the relay.

A `RelayNudger` is built from the Settings handed to the web app or the CLI
(`relay_nudger(settings)`), and closed with them.
"""

from __future__ import annotations

import time

import redis

from app.core import names
from app.core.redisclients import quick_redis, sync_redis
from app.core.settings import Settings

# After a failed nudge, skip nudging for this long: the commit is already done, and the
# workers' sweep relays meanwhile; a request should not pay a dead Redis's timeout each time.
PAUSE_AFTER_FAILURE = 5.0

# KEYS[1]: the wake-up list. At most one wake-up waits: a burst of commits wakes one pass.
_WAKE = """
if redis.call('LLEN', KEYS[1]) == 0 then
    return redis.call('LPUSH', KEYS[1], '1')
end
return 0
"""


class NudgePaused(Exception):
    """Redis was unreachable moments ago; this nudge was skipped (the sweep relays)."""


def wake_key(queue: str) -> str:
    """The list the relay threads of the workers on `queue` wait on."""
    return names.key(queue, "relay-wake")


class RelayNudger:
    """`Nudger`: wakes a relay thread with one Redis command; raises if Redis is
    unreachable, then skips nudging for PAUSE_AFTER_FAILURE seconds."""

    def __init__(self, client: redis.Redis[bytes], queue: str) -> None:
        self.client = client
        self.key = wake_key(queue)
        self._wake = client.register_script(_WAKE)
        self.paused_until = 0.0

    def __call__(self, streams: list[str]) -> None:
        if time.monotonic() < self.paused_until:
            raise NudgePaused("redis unreachable moments ago")
        try:
            self._wake(keys=[self.key])
        except Exception:
            self.paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
            raise

    def close(self) -> None:
        self.client.close()


def relay_nudger(settings: Settings) -> RelayNudger:
    """The nudger of a web node or a CLI run: the broker's Redis (`REDIS_URL`) and the
    relay list of `HERALD_CELERY_QUEUE`, from `settings`."""
    return RelayNudger(quick_redis(settings.redis_url), settings.celery_queue)


# Its name before issue 11, kept for services that call it (docs/publishing.md).
celery_nudger = relay_nudger


class RelayWaker:
    """A relay thread's side of the list: wait for a wake-up (BLPOP), at most `timeout`."""

    def __init__(self, url: str, queue: str) -> None:
        # Its own connection, whose socket timeout outlasts any BLPOP it makes.
        self.client: redis.Redis[bytes] = sync_redis(
            url, socket_timeout=30, socket_connect_timeout=2)
        self.key = wake_key(queue)

    def take(self) -> bool:
        """Take a waiting wake-up without blocking: True if there was one."""
        return self.client.lpop(self.key) is not None

    def wait(self, timeout: float) -> bool:
        """True if woken by a nudge, False after `timeout` seconds (at most 10 s)."""
        return self.client.blpop([self.key], timeout=min(max(timeout, 0.01), 10.0)) is not None

    def close(self) -> None:
        self.client.close()
