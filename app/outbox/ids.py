"""Event ids: UUIDs (version 7) that grow with time, so the events' primary key index is
appended to at its right edge instead of at a random leaf.

A random UUID (version 4) puts every new event on a random page of the index: at a
million events that index outgrows the buffer cache and each insert may read a page
(docs/scaling.md). Version 7 (RFC 9562) starts with the Unix time in milliseconds, then
74 random bits: still globally unique, still a UUID as the contract says, and the pages
an insert touches are the few last ones.
"""

from __future__ import annotations

import os
import time
import uuid

_MS = (1 << 48) - 1
_VERSION = 7 << 76
_VARIANT = 2 << 62
_KEEP = ~((0xF << 76) | (0x3 << 62))


def event_ids(n: int) -> list[str]:
    """`n` new UUIDv7 strings (canonical, lower case)."""
    head = (time.time_ns() // 1_000_000 & _MS) << 80
    noise = os.urandom(10 * n)
    return [str(uuid.UUID(int=(head | int.from_bytes(noise[i:i + 10], "big")) & _KEEP
                          | _VERSION | _VARIANT))
            for i in range(0, 10 * n, 10)]


def event_id() -> str:
    return event_ids(1)[0]
