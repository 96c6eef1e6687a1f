"""This web node's own numbers: sockets, rooms, replayed events, replay page reads, refused
connections, gate overflows."""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class HasPageCounts(Protocol):
    """Replay page counts by stream kind (app.gateway.replay.PageCounts)."""

    @property
    def requests(self) -> int: ...
    @property
    def reads(self) -> int: ...


class HasRooms(Protocol):
    """A Socket.IO client manager: `rooms[namespace][room][sid]`."""

    rooms: dict[str, dict[Any, Any]]


@dataclass
class NodeMetrics:
    """This web node's counters; the gateway calls `replayed` and `refused`."""

    node: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    replayed_total: int = 0
    refused_total: Counter[str] = field(default_factory=Counter)
    fastpaths: dict[str, bool] = field(default_factory=dict)  # set at start (hooks.apply)

    def replayed(self, count: int) -> None:
        self.replayed_total += count

    def refused(self, code: str) -> None:
        self.refused_total[code] += 1


@dataclass(frozen=True)
class NodeSnapshot:
    node: str
    sockets: int
    rooms: int
    memberships: int
    replayed: int
    refused: dict[str, int]
    messages_received: int = 0  # messages taken off Redis (shared + room channels)
    room_channels: int = 0  # stream channels subscribed (confirmed)
    fastpaths: dict[str, bool] = field(default_factory=dict)
    # By stream kind: pages replaying sockets asked for, database reads they cost.
    page_requests: dict[str, int] = field(default_factory=dict)
    page_reads: dict[str, int] = field(default_factory=dict)
    # Times a socket's gates went over their bound (app/gateway/ordering.py `overflows`).
    gate_overflows: int = 0


def node_snapshot(node: NodeMetrics, manager: HasRooms,
                  pages: Mapping[str, HasPageCounts] | None = None) -> NodeSnapshot:
    """Read on the event loop (the gateway's rooms change there)."""
    rooms = memberships = 0
    namespace = manager.rooms.get("/", {})
    sids = set(namespace.get(None, {}))
    for name, members in namespace.items():
        if name is None or name in sids or not members:
            continue
        rooms += 1
        memberships += len(members)
    subscriptions = getattr(manager, "subscriptions", None)
    ordering = getattr(manager, "ordering", None)
    return NodeSnapshot(node.node, len(sids), rooms, memberships, node.replayed_total,
                        dict(node.refused_total), fastpaths=dict(node.fastpaths),
                        messages_received=int(getattr(manager, "messages_received", 0)),
                        room_channels=subscriptions.live_count if subscriptions else 0,
                        page_requests={k: c.requests for k, c in (pages or {}).items()},
                        page_reads={k: c.reads for k, c in (pages or {}).items()},
                        gate_overflows=int(getattr(ordering, "overflows", 0)))
