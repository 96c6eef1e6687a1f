"""The relay's messages are exactly what python-socketio's own emit() would publish."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy import update

from app.core.db import iso_utc
from app.core.errors import PublishRejected, TransportDown
from app.outbox.publisher import (
    MemoryPublisher,
    RedisPublisher,
    _direct_is_exact,
    _reference_messages,
    _rows_are_exact,
    row_messages,
    row_of,
    socketio_messages,
)
from app.outbox.relay import RelayPolicy, relay
from app.outbox.tables import Event, EventRecord
from app.outbox.writer import append
from testkit.databases import Database
from testkit.eventually import eventually
from testkit.redis import PrivateRedis, subscribed

PAYLOADS = [
    {"projectId": 7, "progress": 40, "status": "active"},
    {"type": "info", "title": "Été", "message": "naïve ✓ \"quoted\" \\ \n tab\t"},
    {"nested": {"list": [1, 2.5, None, True, {"deep": []}]}, "empty": {}},
]


def test_direct_build_equals_python_socketio_emit_message_for_message() -> None:
    events = [EventRecord(f"00000000-0000-0000-0000-00000000000{i}", f"ticket-{i}", i + 1,
                          "0123456789abcdef", "ticket-updated", payload,
                          datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
              for i, payload in enumerate(PAYLOADS)]
    assert _direct_is_exact()
    built = [json.loads(message) for message in socketio_messages(events)]
    reference = _reference_messages(events)
    for message, expected in zip(built, reference, strict=True):
        assert list(message) == list(expected)  # same keys, same order
        assert {**message, "host_id": None} == {**expected, "host_id": None}
    assert len({m["host_id"] for m in built}) == 1


# -- the relay's hot path: message bytes straight from the rows ---------------------------
ROW_PAYLOADS = [*PAYLOADS,
                {"big": 12345678901234567890123, "neg": -9223372036854775809, "f": 1e-7},
                {"%s": "%d %%", "quote\"key": "\u0000\u2028 \U0001f600"},
                {}]


def _records(payloads: list[dict[str, object]]) -> list[EventRecord]:
    return [EventRecord(f"00000000-0000-0000-0000-00000000001{i}", f"project-{i % 2 + 1}", i + 1,
                        f"epoch{i % 2}", ["project-updated", "notification"][i % 2], payload,
                        datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
            for i, payload in enumerate(payloads)]


def test_row_messages_decode_to_python_socketio_emits_message_for_message() -> None:
    """Key order included; the payload's JSON text is spliced in as stored."""
    events = _records(ROW_PAYLOADS)
    assert _rows_are_exact()
    built = [json.loads(message) for message in row_messages([row_of(e) for e in events])]
    reference = _reference_messages(events)
    for message, expected in zip(built, reference, strict=True):
        assert list(message) == list(expected)
        assert list(message["data"][1]) == list(expected["data"][1])  # meta's key order
        assert {**message, "host_id": None} == {**expected, "host_id": None}
    assert len({m["host_id"] for m in built}) == 1


def test_a_stored_payload_text_goes_out_as_its_json_value_whatever_its_spacing() -> None:
    [event] = _records([{"a": [1, 2], "b": {"c": None}}])
    row = row_of(event)._replace(payload='{ "a" : [ 1 , 2 ],\n "b" : { "c" : null } }')
    [message] = row_messages([row])
    assert json.loads(message)["data"][0] == {"a": [1, 2], "b": {"c": None}}


def test_the_relay_reads_rows_whose_timestamp_is_formatted_as_meta_formats_it(
    pg_db: Database,
) -> None:
    """PostgreSQL's to_char gives exactly iso_utc (milliseconds truncated, 'Z'), and the
    payload text decodes to what was written."""
    stamps = [datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC),
              datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC),
              datetime(2026, 1, 2, 3, 4, 5, 1000, tzinfo=UTC),
              datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
              datetime(2026, 6, 1, 12, 0, 0, 500500, tzinfo=timezone(timedelta(hours=5)))]
    with pg_db.factory() as session, session.begin():
        records = [append(session, "project-9", "project-updated", payload)
                   for payload in ROW_PAYLOADS[:len(stamps)]]
        for record, stamp in zip(records, stamps, strict=True):
            session.execute(update(Event).where(Event.id == record.id).values(created_at=stamp))
    publisher = MemoryPublisher()
    relay(session_factory=pg_db.factory, publisher=publisher, policy=RelayPolicy())
    assert [row.ts for row in publisher.rows] == [iso_utc(s) for s in stamps]
    assert [json.loads(row.payload) for row in publisher.rows] == ROW_PAYLOADS[:len(stamps)]
    assert [r.offset for r in publisher.rows] == [1, 2, 3, 4, 5]
    assert {r.epoch for r in publisher.rows} == {records[0].epoch}


def test_redis_publisher_sends_rows_in_order_and_a_refused_publish_rejects_its_streams(
    tmp_path: Path,
) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    events = _records(ROW_PAYLOADS)
    publisher = RedisPublisher(server.url, channel="rows")
    client = redis_lib.Redis.from_url(server.url)
    try:
        pubsub = subscribed(client, "rows", sorted({e.stream for e in events}))
        publisher.publish_rows([row_of(e) for e in events])
        got = []

        def all_in() -> bool:
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "smessage":
                got.append(json.loads(message["data"]))
            return len(got) >= len(events)

        eventually(all_in, lambda: f"{len(got)} of {len(events)} arrived", 10, interval=0)
        assert [(m["room"], m["data"][1]["offset"]) for m in got] == \
            [(e.stream, e.offset) for e in events]
        assert [m["data"][0] for m in got] == ROW_PAYLOADS
        pubsub.close()
        # PUBLISH on this channel is now refused (an error reply per command): every
        # stream of the batch is rejected, and the connection still works afterwards.
        client.execute_command("ACL", "SETUSER", "default", "resetchannels", "&other")
        with pytest.raises(PublishRejected) as refused:
            publisher.publish_rows([row_of(e) for e in events])
        assert set(refused.value.failed) == {"project-1", "project-2"}
        assert all("permission" in error.lower() for error in refused.value.failed.values()), \
            refused.value.failed
        client.execute_command("ACL", "SETUSER", "default", "allchannels")
        publisher.publish_rows([row_of(events[0])])
        server.stop()  # Redis goes away: the whole batch is down, nothing is rejected
        with pytest.raises(TransportDown):
            publisher.publish_rows([row_of(e) for e in events])
    finally:
        publisher.close()
        client.close()
        server.stop()
