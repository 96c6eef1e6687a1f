"""The values the client hands to applications: positions, events, publish results."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

TokenSource = Callable[[], "str | Awaitable[str]"]


async def resolve(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async callable and return its value."""
    value = fn(*args)
    if inspect.isawaitable(value):
        value = await value
    return value


@dataclass(frozen=True, slots=True)
class Position:
    """Where a reader is in a stream: the last offset it has, in this epoch (None: any)."""

    offset: int
    epoch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, **({"epoch": self.epoch} if self.epoch else {})}

    @classmethod
    def from_dict(cls, value: Any) -> Position:
        offset, epoch = value.get("offset"), value.get("epoch")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"bad position offset: {offset!r}")
        return cls(offset, epoch if isinstance(epoch, str) else None)


@dataclass(frozen=True, slots=True)
class Meta:
    """A durable event's place: `{id, stream, offset, epoch, ts}` as the server sends it."""

    id: str
    stream: str
    offset: int
    epoch: str
    ts: str

    @classmethod
    def parse(cls, value: Any) -> Meta | None:
        """The meta of a durable event, or None when `value` is not one."""
        if not isinstance(value, dict):
            return None
        offset = value.get("offset")
        stream, epoch = value.get("stream"), value.get("epoch")
        if isinstance(offset, bool) or not isinstance(offset, int) \
                or not isinstance(stream, str) or not isinstance(epoch, str):
            return None
        return cls(str(value.get("id", "")), stream, offset, epoch, str(value.get("ts", "")))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "stream": self.stream, "offset": self.offset,
                "epoch": self.epoch, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class Event:
    """One event as delivered: its Socket.IO name, payload, and meta (None when ephemeral)."""

    type: str
    payload: Any
    meta: Meta | None

    def to_dict(self) -> dict[str, Any]:
        """`{"type", "payload", "meta"}`, the shape of the HTTP history."""
        return {"type": self.type, "payload": self.payload,
                "meta": self.meta.to_dict() if self.meta else None}


@dataclass(frozen=True, slots=True)
class EventSpec:
    """An event to publish."""

    stream: str
    type: str
    data: dict[str, Any]
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Published:
    """What the server stored for a published event (`duplicate`: the key named an older one)."""

    id: str
    stream: str
    offset: int
    duplicate: bool = False
