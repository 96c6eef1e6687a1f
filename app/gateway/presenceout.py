"""Presence events to this node's sockets: state that may wait and be coalesced, never a
reason to close a socket.

A presence event (`presence-join` / `presence-leave`, docs/protocol.md "Presence") reaches
a room's local sockets like any room emit, except that:

- a socket whose `connected` is not out yet gets none: its client reads the room's list
  after `connected` (GET /api/streams/{stream}/presence for a room restored at connect),
  and that read, made after the socket entered the room, includes the change;
- a socket whose send queue has no room for it (more than half full, app/gateway/
  sendqueue.py) gets it later: per (socket, room, user) only the latest change is held,
  and sent once the queue has room again (looked at every `every` seconds). Once a socket
  has changes held, its newer ones are held behind them (none overtakes an older one).

So a burst of presence (a dead node's thousands of users leaving its rooms at once, a
connect storm's joins) never pushes a send queue over its bounds, which closes the
socket's transport; and every socket's list still converges, since clients apply
`presence-join` as "this user is here" and `presence-leave` as "this user is not".
Durable events are unaffected (they are never held here).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.gateway import fanout
from app.gateway.sendqueue import SendQueue

log = logging.getLogger("herald.gateway")

PRESENCE_EVENTS = frozenset({"presence-join", "presence-leave"})

Change = tuple[str, Any]  # (event, payload)


def is_presence(message: dict[str, Any]) -> bool:
    """A room emit of a presence event that this module delivers."""
    return (message.get("event") in PRESENCE_EVENTS and isinstance(message.get("room"), str)
            and not message.get("binary") and message.get("callback") is None)


def _user_of(event: str, payload: Any) -> Any:
    if not isinstance(payload, dict):
        return None
    if event == "presence-join":
        user = payload.get("user")
        return user.get("userId") if isinstance(user, dict) else None
    return payload.get("userId")


class PresenceOut:
    """Presence delivery of one node (see module). `manager`: the Socket.IO client manager."""

    def __init__(self, manager: Any, every: float = 0.2) -> None:
        self.manager = manager
        self.every = every
        self.unannounced: set[str] = set()  # sids whose `connected` is not out yet
        self._held: dict[str, dict[tuple[str, Any], Change]] = {}  # sid -> latest changes
        self._flushing: asyncio.Task[None] | None = None
        self.held = 0  # changes held for a full queue (tests, diagnostics)
        self.coalesced = 0  # held changes replaced by a newer one of the same user

    def announced(self, sid: str) -> None:
        """`connected` is out for `sid`: presence reaches it from now on."""
        self.unannounced.discard(sid)

    def forget(self, sid: str) -> None:
        self.unannounced.discard(sid)
        self._held.pop(sid, None)

    def holding(self, sid: str) -> int:
        return len(self._held.get(sid, ()))

    async def deliver(self, message: dict[str, Any]) -> None:
        namespace = message.get("namespace") or "/"
        room, event = message["room"], message["event"]
        args = fanout.arguments(message.get("data"))
        payload = args[0] if args else None
        server = self.manager.server
        pkt = fanout.encode(server, namespace, event, args)
        if pkt is None:
            return
        skip = fanout.skipped(message.get("skip_sid"))
        eio = server.eio
        size = len(pkt.data) if pkt.data is not None else 0
        now: list[tuple[str, str]] = []
        user = _user_of(event, payload)
        for sid, eio_sid in self.manager.get_participants(namespace, room):
            if sid in skip or sid in self.unannounced:
                continue
            socket = eio.sockets.get(eio_sid)
            if socket is None or socket.closed or socket.closing:
                continue
            queue = socket.queue
            if sid in self._held or (isinstance(queue, SendQueue)
                                     and not queue.has_room(size)):
                self._hold(sid, (room, user), (event, payload))
            else:
                now.append((sid, eio_sid))
        late = fanout.put_all(eio, pkt, now, set())
        for socket in late:
            await socket.send(pkt)  # past its ping timeout: engine.io's send closes it

    def _hold(self, sid: str, key: tuple[str, Any], change: Change) -> None:
        changes = self._held.setdefault(sid, {})
        if key in changes:
            del changes[key]  # the newer change goes behind the others
            self.coalesced += 1
        changes[key] = change
        self.held += 1
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self.every)
            try:
                self.flush()
            except Exception:  # pragma: no cover - never let held presence stall for ever
                log.exception("held presence not flushed")

    def flush(self) -> None:
        """Send each socket's held changes while its queue has room; forget gone sockets'."""
        manager = self.manager
        server = manager.server
        for sid in list(self._held):
            changes = self._held[sid]
            eio_sid = manager.eio_sid_from_sid(sid, "/")
            socket = server.eio.sockets.get(eio_sid) if eio_sid is not None else None
            if socket is None or socket.closed or socket.closing \
                    or not manager.is_connected(sid, "/"):
                del self._held[sid]
                continue
            queue = socket.queue
            while changes:
                key, (event, payload) = next(iter(changes.items()))
                room = key[0]
                pkt = fanout.encode(server, "/", event, [payload])
                if pkt is None:
                    del changes[key]
                    continue
                size = len(pkt.data) if pkt.data is not None else 0
                if isinstance(queue, SendQueue) and not queue.has_room(size):
                    break
                del changes[key]
                if sid in manager.rooms.get("/", {}).get(room, {}):  # still in the room
                    fanout.put_all(server.eio, pkt, [(sid, eio_sid)], set())
            if not changes:
                del self._held[sid]


__all__ = ["PRESENCE_EVENTS", "PresenceOut", "is_presence"]
