"""Presence events to this node's sockets: state that may wait and be coalesced, never a
reason to close a socket.

A presence event (`presence-join` / `presence-leave`, docs/protocol.md "Presence") reaches
a room's local sockets like any room emit, except that:

- a socket whose `connected` is not out yet gets none: its client reads the room's list
  after `connected` (GET /api/streams/{stream}/presence for a room restored at connect),
  and that read, made after the socket entered the room, includes the change;
- a socket whose send queue has no room for it (more than half full, app/gateway/
  sendqueue.py) gets it later: per (socket, room, user) only the latest change is held,
  and sent as the queue makes room again. Once a socket has changes held, its newer ones
  are held behind them (none overtakes an older one).

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

    def __init__(self, manager: Any, every: float = 1.0) -> None:
        self.manager = manager
        self.every = every
        self.unannounced: set[str] = set()  # sids whose `connected` is not out yet
        self._held: dict[str, dict[tuple[str, Any], Change]] = {}  # sid -> latest changes
        self._flushing: set[asyncio.Task[None]] = set()  # a task per socket with some held
        self.held = 0  # changes held for a full queue (tests, diagnostics)
        self.coalesced = 0  # held changes replaced by a newer one of the same user

    def announced(self, sid: str) -> None:
        """`connected` is out for `sid`: presence reaches it from now on."""
        self.unannounced.discard(sid)

    def forget(self, sid: str) -> None:
        self.unannounced.discard(sid)
        self._held.pop(sid, None)

    def moved(self, sid: str, room: str) -> None:
        """`sid` entered (or left) `room`: what was held for it there is older than the
        list its join reads (or of no use any more), and goes."""
        changes = self._held.get(sid)
        if changes:
            for key in [key for key in changes if key[0] == room]:
                del changes[key]

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
        changes = self._held.get(sid)
        if changes is None:
            log.info("presence held for a send queue half full sid=%s", sid)
            changes = self._held[sid] = {}
            task = asyncio.create_task(self._flush(sid))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        if key in changes:
            del changes[key]  # the newer change goes behind the others
            self.coalesced += 1
        changes[key] = change
        self.held += 1

    async def _flush(self, sid: str) -> None:
        """Send `sid` its held changes as its queue makes room, until none is left or the
        socket is gone (a task per socket with changes held, only while it has some)."""
        manager = self.manager
        server = manager.server
        try:
            while True:
                await asyncio.sleep(0)  # after the delivery that held the first change
                changes = self._held.get(sid)
                eio_sid = manager.eio_sid_from_sid(sid, "/")
                socket = server.eio.sockets.get(eio_sid) if eio_sid is not None else None
                if changes is None or socket is None or socket.closed or socket.closing \
                        or not manager.is_connected(sid, "/"):
                    return
                queue = socket.queue
                if isinstance(queue, SendQueue) and queue.overflowed:
                    return
                while changes:
                    key, (event, payload) = next(iter(changes.items()))
                    pkt = fanout.encode(server, "/", event, [payload])
                    size = len(pkt.data) if pkt is not None and pkt.data is not None else 0
                    if isinstance(queue, SendQueue) and not queue.has_room(size):
                        break
                    del changes[key]
                    if pkt is not None and sid in manager.rooms.get("/", {}).get(key[0], {}):
                        fanout.put_all(server.eio, pkt, [(sid, eio_sid)], set())
                if not changes:
                    return
                if isinstance(queue, SendQueue):
                    await queue.wait_room(0, self.every)
        except Exception:  # pragma: no cover - never let a socket's held presence stall
            log.exception("held presence not flushed sid=%s", sid)
        finally:
            left = len(self._held.pop(sid, {}))
            log.info("presence held flushed sid=%s dropped=%d", sid, left)


__all__ = ["PRESENCE_EVENTS", "PresenceOut", "is_presence"]
