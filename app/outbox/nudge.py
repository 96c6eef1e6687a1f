"""Nudge the Celery relay after a commit: a task message naming the touched streams."""

from __future__ import annotations

import time

RELAY_TASK = "herald.relay"
# After a failed nudge, skip nudging for this long: reaching a dead broker takes seconds
# (client retries), and the commit is already done; the beat sweep relays meanwhile.
PAUSE_AFTER_FAILURE = 5.0
_paused_until = 0.0


class NudgePaused(Exception):
    """The broker was unreachable moments ago; this nudge was skipped (the sweep relays)."""


def celery_nudger(streams: list[str]) -> None:
    """Enqueue the relay for these streams; raises if the broker is unreachable (caller logs)."""
    global _paused_until
    if time.monotonic() < _paused_until:
        raise NudgePaused("broker unreachable moments ago")
    from workers.celery_app import celery_app

    try:
        celery_app.send_task(RELAY_TASK, args=[streams], retry=False)
    except Exception:
        _paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
        raise
