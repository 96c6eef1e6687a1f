"""Nudge the Celery relay after a commit: a task message naming the touched streams."""

from __future__ import annotations

RELAY_TASK = "herald.relay"


def celery_nudger(streams: list[str]) -> None:
    """Enqueue the relay for these streams; raises if the broker is unreachable (caller logs)."""
    from workers.celery_app import celery_app

    celery_app.send_task(RELAY_TASK, args=[streams], retry=False)
