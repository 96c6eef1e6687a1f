"""Ids as the database stores them: positive and within a 32-bit Integer column.

PostgreSQL's `integer` is 32-bit; an id past it makes the driver raise (a 500) instead
of finding nothing. Every id a client controls is checked against this bound first.
"""

from __future__ import annotations

from typing import Any

MAX_ID = 2**31 - 1  # Integer primary keys (users, projects, tickets, ...)
MAX_OFFSET = 2**63 - 1  # BigInteger stream offsets


def is_id(value: Any) -> bool:
    """True for an int (not a bool) that can name a row."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def is_canonical_int(text: str) -> bool:
    """'1', '42': ASCII digits, no sign, no leading zero, no spaces (not '002', not Arabic)."""
    return (text.isascii() and text.isdigit() and text[0] != "0"
            and len(text) <= len(str(MAX_ID)) and int(text) <= MAX_ID)


__all__ = ["MAX_ID", "MAX_OFFSET", "is_canonical_int", "is_id"]
