"""Nudges coalesce: while a relay task is due, further commits send nothing more."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from kombu.exceptions import OperationalError

from app.core.settings import Settings
from app.outbox import nudge
from app.outbox.taskqueue import make_celery
from testkit.processes import free_port


@pytest.fixture
def mark(redis_url: str) -> Iterator[nudge.DueMark]:
    due = nudge.due_mark(redis_url, f"nudge-test-{uuid.uuid4().hex}", ttl=1)
    try:
        yield due
    finally:
        due.clear()
        due.close()


def test_only_the_first_nudge_marks_a_relay_due_until_the_relay_clears_it(
    mark: nudge.DueMark,
) -> None:
    assert mark.claim() is True
    assert mark.claim() is False  # a relay is already waiting
    mark.clear()  # the relay starts: later commits nudge again
    assert mark.claim() is True


def test_a_lost_relay_task_blocks_nudges_only_until_the_mark_expires(
    mark: nudge.DueMark,
) -> None:
    assert mark.claim() is True  # its relay task is then lost: nobody clears the mark
    assert mark.claim() is False
    deadline = time.monotonic() + 5
    while not mark.claim():  # the mark expires (ttl=1s): a nudge goes through again
        assert time.monotonic() < deadline, "the due mark never expired"
        time.sleep(0.1)


def test_nudging_a_dead_broker_raises_clears_the_mark_then_pauses(
    mark: nudge.DueMark,
) -> None:
    """The writer logs the failure; the next nudges skip the broker for a few seconds."""
    dead = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0",
                    celery_queue="nudge-dead-broker")
    nudger = nudge.CeleryNudger(make_celery(dead), mark)
    try:
        with pytest.raises(OperationalError):
            nudger(["project-1"])
        assert mark.claim() is True  # the failed send took its mark back
        mark.clear()
        with pytest.raises(nudge.NudgePaused):
            nudger(["project-1"])
    finally:
        nudger.sender.close()  # type: ignore[attr-defined]


def test_a_web_app_nudges_on_the_queue_of_the_settings_it_was_given(redis_url: str) -> None:
    """No process-wide nudger: create_app's own Settings decide the queue."""
    from app.main import create_app

    queue = f"nudge-app-{uuid.uuid4().hex}"
    settings = Settings(database_url="sqlite://", redis_url=redis_url, celery_queue=queue)
    asgi = create_app(settings)
    ctx = asgi.herald
    try:
        nudger = ctx.factory.kw["info"]["herald.nudger"]
        assert nudger.mark.key == nudge.due_key(queue)
        assert nudger.sender.conf.task_default_queue == queue
    finally:
        ctx.close()
