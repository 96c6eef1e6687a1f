"""The relay's messages are exactly what python-socketio's own emit() would publish."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from app.outbox.publisher import _direct_is_exact, _reference_messages, socketio_messages
from app.outbox.tables import EventRecord

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
