"""Publishers: put events on the Socket.IO message queue, and *raise* when that fails.

python-socketio's own RedisManager.emit() logs "giving up" and returns None when Redis
refuses a publish, which would lose events silently. We build the exact message its
PubSubManager.emit() builds (by calling that code), then PUBLISH it ourselves through a
redis-py pipeline whose failures raise.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
import socketio

from app.core import jsoncodec
from app.core.errors import PublishRejected, TransportDown
from app.outbox.tables import EventRecord


class Publisher(Protocol):
    """Publishes events to every Socket.IO node, in the given order, or raises DeliveryError."""

    def publish(self, events: Sequence[EventRecord]) -> None: ...

    def close(self) -> None: ...


class _MessageBuilder(socketio.PubSubManager):  # type: ignore[misc]
    """python-socketio's own emit(), captured instead of sent: the wire format stays theirs."""

    def __init__(self) -> None:
        super().__init__(write_only=True)
        self.captured: list[dict[str, Any]] = []

    def _publish(self, data: dict[str, Any]) -> None:
        self.captured.append(data)


def _encode(message: dict[str, Any]) -> bytes:
    return jsoncodec.dumps(message)


def _reference_messages(events: Sequence[EventRecord]) -> list[dict[str, Any]]:
    """The messages python-socketio's own PubSubManager.emit() builds for these events."""
    builder = _MessageBuilder()
    for event in events:
        builder.emit(event.type, (event.payload, event.meta), room=event.stream, namespace="/")
    return builder.captured


def _direct_message(event: EventRecord, host_id: str) -> dict[str, Any]:
    """The same message built directly (an event's payload is JSON: never binary)."""
    return {"method": "emit", "event": event.type, "data": [event.payload, event.meta],
            "binary": False, "namespace": "/", "room": event.stream, "skip_sid": None,
            "callback": None, "host_id": host_id}


@functools.cache
def _direct_is_exact() -> bool:
    """Whether the direct build equals python-socketio's, key order included (checked once)."""
    probe = EventRecord("00000000-0000-0000-0000-000000000000", "user-1", 1, "e", "probe",
                        {"a": [1, {"b": None}], "c": "d"}, datetime(2000, 1, 1, tzinfo=UTC))
    [reference] = _reference_messages([probe])
    direct = _direct_message(probe, reference["host_id"])
    return list(direct.items()) == list(reference.items())


def socketio_messages(events: Sequence[EventRecord]) -> list[bytes]:
    """Each event as the JSON message a python-socketio PubSubManager publishes.

    Built directly (going through emit() costs more than the PUBLISH itself), but only
    while that gives exactly what python-socketio's emit() builds; otherwise through it.
    """
    if not _direct_is_exact():
        return [_encode(message) for message in _reference_messages(events)]
    host_id = uuid.uuid4().hex
    return [_encode(_direct_message(event, host_id)) for event in events]


class RedisPublisher:
    """Pipelined PUBLISH to the Socket.IO channel on Redis."""

    def __init__(self, url: str, *, channel: str = "socketio", timeout: float = 5.0) -> None:
        self.channel = channel
        self.redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )

    def publish(self, events: Sequence[EventRecord]) -> None:
        if not events:
            return
        messages = socketio_messages(events)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for message in messages:
                pipe.publish(self.channel, message)
            results = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise TransportDown(f"redis unreachable: {type(exc).__name__}: {exc}") from exc
        failed: dict[str, str] = {}
        for event, result in zip(events, results, strict=True):
            if isinstance(result, Exception):
                failed.setdefault(event.stream, f"{type(result).__name__}: {result}")
        if failed:
            raise PublishRejected(f"redis refused {len(failed)} stream(s)", failed=failed)

    def close(self) -> None:
        self.redis.close()


class MemoryPublisher:
    """Keeps what it was given, in order (unit tests); `fail_streams` makes chosen streams fail."""

    def __init__(self) -> None:
        self.published: list[EventRecord] = []
        self.fail_streams: dict[str, str] = {}
        self.down = False

    def publish(self, events: Sequence[EventRecord]) -> None:
        if self.down:
            raise TransportDown("memory transport is down")
        failed = {e.stream: self.fail_streams[e.stream] for e in events
                  if e.stream in self.fail_streams}
        self.published.extend(e for e in events if e.stream not in failed)
        if failed:
            raise PublishRejected(f"refused {len(failed)} stream(s)", failed=failed)

    def close(self) -> None:
        return None
