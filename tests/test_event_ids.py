"""Event ids are UUIDs (version 7) that grow with time: new events go to the right edge of
the events' primary key index, not to a random page of it."""

from __future__ import annotations

import time
import uuid

from app.outbox.ids import event_id, event_ids


def test_event_ids_are_unique_version_7_uuids_in_canonical_form() -> None:
    ids = event_ids(10_000) + [event_id() for _ in range(100)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)


def test_event_ids_of_a_later_millisecond_sort_after_earlier_ones() -> None:
    first = event_ids(100)
    start = time.monotonic_ns()
    while time.monotonic_ns() - start < 2_000_000:  # into a later millisecond
        pass
    later = event_ids(100)
    assert max(first) < min(later)
    assert int(uuid.UUID(later[0]).int >> 80) <= time.time_ns() // 1_000_000
