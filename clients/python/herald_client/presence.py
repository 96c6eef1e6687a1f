"""Who is here: the members of each project/ticket room the subscriber is in.

A room's list starts from a snapshot (the join ack's `presence`, or
`GET /api/streams/{stream}/presence` for a room restored at connect) and follows the
ephemeral `presence-join` / `presence-leave` events. Events that arrive while a snapshot is
pending are kept and applied on top of it (the server reads the snapshot after the socket
entered the room, so nothing is lost and nothing stale stays). `on_presence(stream,
handler(members))` is called with the whole list, sorted by name, on every change.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("herald_client")
PresenceHandler = Callable[[list[dict[str, Any]]], Any]
EVENTS = ("presence-join", "presence-leave")


def tracked(stream: str) -> bool:
    return stream.startswith(("project-", "ticket-"))


class PresenceBook:
    def __init__(self, spawn: Callable[[Any], None]) -> None:
        self._spawn = spawn
        self._members: dict[str, dict[int, dict[str, Any]]] = {}
        self._pending: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._handlers: dict[str, list[PresenceHandler]] = {}

    def members(self, stream: str) -> list[dict[str, Any]] | None:
        """The members of `stream` as last known, None before its first snapshot."""
        book = self._members.get(stream)
        if book is None:
            return None
        return sorted((dict(m) for m in book.values()),
                      key=lambda m: (str(m.get("name", "")), m.get("userId", 0)))

    def on(self, stream: str, handler: PresenceHandler) -> Callable[[], None]:
        """`handler(members)` on each change of `stream`'s members (at once if known)."""
        self._handlers.setdefault(stream, []).append(handler)
        if stream in self._members:
            self._call(handler, self.members(stream) or [])

        def off() -> None:
            handlers = self._handlers.get(stream, [])
            if handler in handlers:
                handlers.remove(handler)
        return off

    def begin(self, stream: str) -> None:
        """A snapshot of `stream` is on its way: keep the events until it comes."""
        self._pending.setdefault(stream, [])

    def snapshot(self, stream: str, members: Any) -> None:
        held = self._pending.pop(stream, [])
        if not isinstance(members, list):
            return
        self._members[stream] = {m["userId"]: m for m in members
                                 if isinstance(m, dict) and isinstance(m.get("userId"), int)}
        for name, payload in held:
            self._apply(name, payload)
        self._changed(stream)

    def forget(self, stream: str) -> None:
        self._pending.pop(stream, None)
        if self._members.pop(stream, None) is not None:
            for handler in list(self._handlers.get(stream, ())):
                self._call(handler, [])

    def event(self, name: str, payload: Any) -> None:
        if name not in EVENTS or not isinstance(payload, dict):
            return
        stream = payload.get("stream")
        if not isinstance(stream, str):
            return
        if stream in self._pending:
            self._pending[stream].append((name, payload))
        elif stream in self._members and self._apply(name, payload):
            self._changed(stream)

    def _apply(self, name: str, payload: dict[str, Any]) -> bool:
        book = self._members.get(str(payload.get("stream")))
        if book is None:
            return False
        if name == "presence-join":
            user = payload.get("user")
            if isinstance(user, dict) and isinstance(user.get("userId"), int):
                book[user["userId"]] = user
                return True
            return False
        user_id = payload.get("userId")
        return book.pop(user_id, None) is not None if isinstance(user_id, int) else False

    def _changed(self, stream: str) -> None:
        members = self.members(stream) or []
        for handler in list(self._handlers.get(stream, ())):
            self._call(handler, members)

    def _call(self, handler: PresenceHandler, members: list[dict[str, Any]]) -> None:
        try:
            result = handler(members)
            if inspect.isawaitable(result):
                self._spawn(result)
        except Exception:
            log.exception("a presence handler failed")


__all__ = ["PresenceBook", "PresenceHandler", "tracked"]
