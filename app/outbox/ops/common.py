"""What the operators' views share: timestamps as the API spells them, ages, JSON keys,
lists of names cut to fit a statement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, cast

from app.core.db import iso_utc

MAX_LISTED = 100
# Names per statement: a list of names is sent as one parameter each, and PostgreSQL
# takes at most 65,535 (`retry --all` after Redis refused 70,000 streams failed there).
CHUNK = 10_000


def chunks(names: Sequence[str]) -> list[Sequence[str]]:
    """`names` in slices of at most CHUNK (read at each call: tests make it small)."""
    return [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they are UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    return iso_utc(value) if value is not None else None


def age(value: datetime | None, now: datetime) -> float | None:
    utc = aware(value)
    return round(max(0.0, (now - utc).total_seconds()), 3) if utc else None


def camel(fields: dict[str, Any]) -> dict[str, Any]:
    """JSON keys as the rest of the API spells them; ages are in seconds."""
    out = {}
    for key, value in fields.items():
        head, *rest = key.split("_")
        name = head + "".join(part.title() for part in rest)
        out[name + "Seconds" if name.endswith("Age") else name] = value
    return out


class CamelView:
    """A view dataclass whose `to_dict()` is its fields with the API's JSON keys."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return camel(asdict(cast(Any, self)))
