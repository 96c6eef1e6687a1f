"""The ordering model of a web node: gates, floors and marks, in memory, no I/O.

Each socket must see each stream it is in in offset order, without gaps. Live events come
from the relay through Redis pub/sub (at most once); missed ones come from the event table
by replay (app/gateway/replay.py). This module is the bookkeeping that lets the two meet;
the manager (app/gateway/manager.py) feeds it every durable live event of a room
(`on_live`, which says which sockets must not get it now) and does the python-socketio
and Redis side.

* **Gate** (per socket, stream): open while the socket replays the stream. Live events of
  the stream are held in it instead of sent; the replay then `take`s them and sends those
  newer than what it sent. What gates hold is bounded per socket, by the bounds of its
  send queue (characters of event JSON, events; HERALD_SOCKET_QUEUE_BYTES/_PACKETS): a
  replay paced by a slow reader (HERALD_SOCKET_DRAIN_TIMEOUT) would otherwise make the
  node hold every live event meanwhile. Past the bound, the socket's gates drop what they
  hold and keep only the highest offset dropped (`Taken.dropped`) until the next `take`;
  the replay reads the event table through that offset instead (every event published is
  committed there first), so the client still gets every event, in order.
* **Floor** (per socket, stream): when a replay closes its gate, the last offset it sent.
  Live events at or below it (a relay lagging behind the database) are not sent to the
  socket again; the first live event above it removes the floor.
* **Mark** (per room): the offset through which every socket of this node in the room
  was sent the stream: set when a replay or a catch-up ends, advanced by each live event
  that follows it without a gap. After a lost subscription the gateway catches each room
  up from the event table after its mark (app/gateway/catchup.py).

Not thread-safe: used on the event loop only, and no method awaits, so a `take` that finds
nothing followed by `close_gate` lets nothing slip between them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from app.core import jsoncodec
from app.gateway.events import LogBudget

log = logging.getLogger("herald.gateway")

Held = tuple[int, str, list[Any]]  # (offset, event name, arguments)
PRUNE_MARKS_EVERY = 1000


class Taken(NamedTuple):
    """What a gate held since the last `take`: its events in offset order and, if it went
    over its bound meanwhile, the highest offset it dropped (read those from the table)."""

    events: list[Held]
    dropped: int | None


@dataclass(slots=True)
class _Gate:
    events: list[Held] = field(default_factory=list)
    size: int = 0  # characters of the held events' JSON
    dropped: int | None = None  # set: over the bound, holding nothing until the next take


def event_size(event: str, args: list[Any]) -> int:
    """Characters of an event's JSON, as its Socket.IO packet carries it (about)."""
    return len(jsoncodec.dumps([event, *args]))


class Ordering:
    """Gates, floors and marks of one node's sockets (see the module).

    `members(room)`: the sockets of this node in a room (the manager's rooms); used for
    marks only. `max_bytes`/`max_packets`: what one socket's gates may hold together.
    """

    def __init__(self, members: Callable[[str], Collection[str]], *,
                 max_bytes: int = 2 * 2**20, max_packets: int = 5000,
                 measure: Callable[[str, list[Any]], int] = event_size) -> None:
        self.members = members
        self.max_bytes = max_bytes
        self.max_packets = max_packets
        self.measure = measure
        self.overflows = 0  # times a socket's gates went over the bound (tests, diagnostics)
        self.log_budget = LogBudget()  # their log lines: ~10 a second at most
        self._gates: dict[str, dict[str, _Gate]] = {}  # room -> sid -> gate
        self._floors: dict[str, dict[str, int]] = {}  # room -> sid -> floor
        self._load: dict[str, list[int]] = {}  # sid -> [characters, events] its gates hold
        self._marks: dict[str, int] = {}
        self._notes = 0

    # -- gates ---------------------------------------------------------------------------
    def open_gate(self, sid: str, room: str) -> None:
        """Hold live events of `room` for `sid` from now on; any floor there goes."""
        gates = self._gates.setdefault(room, {})
        if sid in gates:
            self._unload(sid, gates[sid])
        gates[sid] = _Gate()
        _drop(self._floors, sid, room)

    def is_gated(self, sid: str, room: str) -> bool:
        return sid in self._gates.get(room, {})

    def gated(self, room: str) -> bool:
        """Whether any socket has a gate open on `room`."""
        return room in self._gates

    def take(self, sid: str, room: str) -> Taken:
        """Empty (sid, room)'s gate and return what it held; the gate stays open."""
        gate = self._gates.get(room, {}).get(sid)
        if gate is None:
            return Taken([], None)
        self._unload(sid, gate)
        taken = Taken(sorted(gate.events, key=lambda item: item[0]), gate.dropped)
        gate.events, gate.size, gate.dropped = [], 0, None
        return taken

    def close_gate(self, sid: str, room: str, floor: int | None = None) -> None:
        """Let live events of `room` reach `sid` again, except those at or below `floor`
        (sent already). What the gate still holds is dropped: `take` it first."""
        gate = self._gates.get(room, {}).get(sid)
        if gate is not None:
            self._unload(sid, gate)
            _drop(self._gates, sid, room)
        if floor is not None and floor > 0:
            self._floors.setdefault(room, {})[sid] = floor
        else:
            _drop(self._floors, sid, room)

    def close_all(self, sid: str) -> list[str]:
        """Forget `sid`'s gates and floors (it is gone); the rooms it had any in."""
        rooms = [r for r, sids in self._gates.items() if sid in sids]
        for room in rooms:
            self.close_gate(sid, room)
        floored = [r for r, sids in self._floors.items() if sid in sids]
        for room in floored:
            _drop(self._floors, sid, room)
        return list(dict.fromkeys([*rooms, *floored]))

    def sids(self) -> set[str]:
        """The sockets with a gate or a floor (tests, diagnostics)."""
        return {sid for table in (self._gates, self._floors)
                for sids in table.values() for sid in sids}

    def held(self, sid: str) -> tuple[int, int]:
        """(characters, events) that `sid`'s gates hold now; at most the bounds."""
        load = self._load.get(sid)
        return (load[0], load[1]) if load is not None else (0, 0)

    # -- live events ---------------------------------------------------------------------
    def watches(self, room: str) -> bool:
        """Whether live events of `room` concern the model (a mark, gate or floor there):
        the fan-out path asks this first, one look-up per message."""
        return room in self._marks or room in self._gates or room in self._floors

    def on_live(self, room: str, offset: int, event: str, args: list[Any]) -> list[str]:
        """A durable live event of `room` reached this node: the mark follows it, gates
        hold it, floors at or above it skip it. Returns the sockets not to send it to."""
        self.live(room, offset)
        skip: list[str] = []
        gates = self._gates.get(room)
        if gates:
            size = self.measure(event, args)
            for sid, gate in list(gates.items()):
                skip.append(sid)
                if gate.dropped is not None:
                    gate.dropped = max(gate.dropped, offset)
                    continue
                gate.events.append((offset, event, list(args)))
                gate.size += size
                load = self._load.setdefault(sid, [0, 0])
                load[0] += size
                load[1] += 1
                if load[0] > self.max_bytes or load[1] > self.max_packets:
                    self._overflow(sid, room)
        floors = self._floors.get(room)
        if floors:
            for sid, floor in list(floors.items()):
                if offset <= floor:
                    skip.append(sid)
                else:
                    _drop(self._floors, sid, room)
        return skip

    def _overflow(self, sid: str, room: str) -> None:
        """`sid`'s gates hold too much: each drops its events, keeping their highest offset."""
        load = self._load.pop(sid, [0, 0])
        for gates in self._gates.values():
            gate = gates.get(sid)
            if gate is not None and gate.events:
                top = max(offset for offset, _, _ in gate.events)
                gate.dropped = top if gate.dropped is None else max(gate.dropped, top)
                gate.events, gate.size = [], 0
        self.overflows += 1
        left_out = self.log_budget.take()
        if left_out is not None:
            log.warning("gates over their bounds, live events left to the replay sid=%s "
                        "room=%s events=%d chars=%d left_out=%d", sid, room, load[1], load[0],
                        left_out)

    def _unload(self, sid: str, gate: _Gate) -> None:
        load = self._load.get(sid)
        if load is None:
            return
        load[0] -= gate.size
        load[1] -= len(gate.events)
        if load[1] <= 0:
            del self._load[sid]

    # -- marks ---------------------------------------------------------------------------
    def mark(self, room: str) -> int | None:
        """The offset through which every socket here in `room` was sent the stream."""
        return self._marks.get(room)

    def note_sent(self, sid: str, room: str, last: int) -> None:
        """`sid` was sent `room` through `last` (its replay closed): lower the mark to it."""
        # any(): stops at the first other socket (a list of all members made every
        # connect cost O(sockets in the room), O(n²) for a room's n connects).
        others = any(s != sid for s in self.members(room))
        mark = self._marks.get(room)
        self._marks[room] = last if mark is None or not others else min(mark, last)
        self._notes += 1
        if self._notes % PRUNE_MARKS_EVERY == 0:
            self._prune_marks()

    def set_mark(self, room: str, last: int) -> None:
        """Every socket here in `room` was sent it through `last` (a catch-up closed)."""
        self._marks[room] = max(last, self._marks.get(room, 0))

    def live(self, room: str, offset: int) -> None:
        """The mark follows a live event only without a gap (a message lost while
        unsubscribed leaves the mark before it: the catch-up starts there)."""
        mark = self._marks.get(room)
        if mark is not None and offset == mark + 1:
            self._marks[room] = offset

    def keep_marks(self, rooms: Iterable[str]) -> None:
        """Forget the marks of every room but `rooms`."""
        keep = set(rooms)
        for room in [r for r in self._marks if r not in keep]:
            del self._marks[room]

    def _prune_marks(self) -> None:
        """Forget the marks of rooms that emptied meanwhile: a look-up per mark, no copy of
        any room (copying every room's members made each connect cost O(sockets))."""
        for room in [r for r in self._marks if not self.members(r)]:
            del self._marks[room]


def _drop(table: dict[str, dict[str, Any]], sid: str, room: str) -> None:
    sids = table.get(room)
    if sids is not None:
        sids.pop(sid, None)
        if not sids:
            table.pop(room, None)


__all__ = ["Held", "Ordering", "Taken", "event_size"]
