"""Nudges coalesce: while a relay task is due, further commits send nothing more."""

from __future__ import annotations

import uuid

import pytest

from app.outbox import nudge


def test_only_the_first_nudge_marks_a_relay_due_until_the_relay_clears_it(redis_url: str
                                                                          ) -> None:
    queue = f"nudge-test-{uuid.uuid4().hex}"
    assert nudge.claim_due(redis_url, queue) is True
    assert nudge.claim_due(redis_url, queue) is False  # a relay is already waiting
    nudge.clear_due(redis_url, queue)  # the relay starts: later commits nudge again
    assert nudge.claim_due(redis_url, queue) is True
    nudge.clear_due(redis_url, queue)


def test_a_lost_relay_task_blocks_nudges_only_until_the_mark_expires(redis_url: str) -> None:
    queue = f"nudge-test-{uuid.uuid4().hex}"
    assert nudge.claim_due(redis_url, queue)
    ttl = nudge._client(redis_url).ttl(nudge.due_key(queue))
    assert 0 < ttl <= nudge.DUE_TTL
    nudge.clear_due(redis_url, queue)


def test_nudging_a_dead_broker_raises_then_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer logs the failure; the next nudges skip the broker for a few seconds."""
    import importlib

    module = importlib.import_module("workers.celery_app")
    monkeypatch.setattr(module.settings, "redis_url", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(nudge, "_paused_until", 0.0)
    with pytest.raises(Exception) as first:
        nudge.celery_nudger(["project-1"])
    assert not isinstance(first.value, nudge.NudgePaused)
    with pytest.raises(nudge.NudgePaused):
        nudge.celery_nudger(["project-1"])
