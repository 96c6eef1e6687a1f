"""A kept replay page's tail: the live events of its stream that this node received since
just before the page was read, so that a page stays good for readers whose gate opened
after its read (app/gateway/replay.py, `PageReads`).

A page not full that was read at R holds every event committed before R. A reader whose
gate opened at S > R also needs those published between R and S (later ones reach its
own gate). The tail is a gate of its own, opened before the read, while the node is
subscribed to the stream's channel: everything published after it opened reaches it, and
whatever was published before was committed before R. So page + tail hold everything
published until now, and in a reconnect storm one read per page serves the sockets
arriving over the page's whole keep time, not only those that arrived during the read.

The tail ends (and the page is no longer good for later readers) if a hole shows in it,
its gate went over its bound (app/gateway/ordering.py: what it dropped is a hole), or the
node's subscription was lost or dropped since it opened (events may be missing).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.gateway.ordering import Ordering


class Subscriptions(Protocol):
    """app.gateway.rooms.RoomChannels."""

    losses: int

    def is_live(self, room: str) -> bool: ...


class Gates(Protocol):
    """app.gateway.manager.HeraldRedisManager's gates (their model: `ordering`)."""

    subscriptions: Subscriptions
    ordering: Ordering

    def open_gate(self, sid: str, room: str) -> None: ...
    def close_gate(self, sid: str, room: str, floor: int | None = None) -> None: ...


@dataclass(eq=False)
class TailEvent:
    offset: int
    name: str
    data: list[Any]
    packet: str | None = field(default=None, repr=False)  # encoded once, for every reader


class Tail:
    """A gate on `stream` for a page read about to begin; `extend()` takes in what arrived."""

    _ids = itertools.count(1)

    def __init__(self, gates: Gates, stream: str) -> None:
        self.gates = gates
        self.stream = stream
        self.sid = f"page-tail-{next(Tail._ids)}"  # no socket has such an id
        self.losses = gates.subscriptions.losses
        self.events: list[TailEvent] = []
        self.last = -1  # the page's last offset once read (`begin_at`), then the tail's
        self.open = True
        gates.open_gate(self.sid, stream)

    @classmethod
    def start(cls, gates: Gates | None, stream: str) -> Tail | None:
        """A tail, if this node is subscribed to `stream`'s channel now (else: none)."""
        if gates is None or not gates.subscriptions.is_live(stream):
            return None
        return cls(gates, stream)

    def begin_at(self, last: int) -> None:
        """The page read holds the stream through `last`: the tail follows on from it."""
        self.last = last

    def extend(self) -> bool:
        """Take in what arrived since; False (and closed) if the tail cannot be trusted."""
        if not self.open:
            return False
        subscriptions = self.gates.subscriptions
        if subscriptions.losses != self.losses or not subscriptions.is_live(self.stream):
            self.close()
            return False
        taken = self.gates.ordering.take(self.sid, self.stream)
        if taken.dropped is not None:  # over its bound: what it dropped is a hole
            self.close()
            return False
        for offset, name, data in taken.events:
            if offset <= self.last:
                continue  # in the page already (committed before its read, published after)
            if offset != self.last + 1:
                self.close()
                return False
            self.events.append(TailEvent(offset, name, data))
            self.last = offset
        return True

    def close(self) -> None:
        if self.open:
            self.open = False
            self.gates.close_gate(self.sid, self.stream)


__all__ = ["Gates", "Tail", "TailEvent"]
