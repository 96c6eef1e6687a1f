"""The user's inbox (read, seen, archived state of their notifications) and per-type
event callbacks.

`Inbox` marks over the socket (`inbox-mark`), lists over HTTP (`GET /api/inbox`), and
follows the events the subscriber hands to the application: each `inbox-updated` (from
any tab or device of the user, replayed after an absence) sets the counts and calls the
`on_change` handlers with `(counts, change)`; a new `notification` counts one more unread
and unseen item until the next change or list says otherwise.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .types import Event

log = logging.getLogger("herald_client")
Ids = list[str]  # (Inbox has a method named `list`)
CAP = 999
Handler = Callable[..., Any]
ChangeHandler = Callable[[dict[str, Any], dict[str, Any]], Any]
Call = Callable[[str, Any], Awaitable[dict[str, Any]]]
Get = Callable[[str, dict[str, Any]], Awaitable[Any]]


class Handlers:
    """Callbacks per event type, called with (payload, meta) as events are handed out."""

    def __init__(self) -> None:
        self._by_type: dict[str, list[Handler]] = {}

    def add(self, type_: str, handler: Handler) -> Callable[[], None]:
        """Register `handler(payload, meta)` (sync or async) for `type_`; returns `off()`."""
        self._by_type.setdefault(type_, []).append(handler)

        def off() -> None:
            with_handler = self._by_type.get(type_, [])
            if handler in with_handler:
                with_handler.remove(handler)
        return off

    async def dispatch(self, event: Event) -> None:
        """Call the handlers of `event.type` in order; a failing handler is logged."""
        for handler in list(self._by_type.get(event.type, ())):
            await _call_safely(handler, event.payload, event.meta)


async def _call_safely(handler: Handler, *args: Any) -> None:
    try:
        result = handler(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("an event handler failed")


class Inbox:
    """`subscriber.inbox`: list, mark (read, unread, seen, archive, unarchive, all read or
    seen), the latest counts, and `on_change(handler(counts, change))`."""

    def __init__(self, *, call: Call, get: Get) -> None:
        self._call, self._get = call, get
        self._counts: dict[str, Any] | None = None
        self._handlers: list[ChangeHandler] = []

    @property
    def counts(self) -> dict[str, Any] | None:
        """`{unread, unseen, countsCapped}` as last heard (None before any list or change)."""
        return dict(self._counts) if self._counts is not None else None

    def on_change(self, handler: ChangeHandler) -> Callable[[], None]:
        """Call `handler(counts, change)` (sync or async) on every change of the inbox:
        `change` is the `inbox-updated` payload, or `{"added": [id]}` for a new
        notification. Returns `off()`."""
        self._handlers.append(handler)

        def off() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)
        return off

    async def list(self, state: str = "all", limit: int = 50,
                   before: str | None = None) -> dict[str, Any]:
        """`GET /api/inbox`: `{items, counts, hasMore}`, newest first (the counts are kept)."""
        params: dict[str, Any] = {"state": state, "limit": limit}
        if before is not None:
            params["before"] = before
        body = await self._get("/api/inbox", params)
        self._counts = dict(body["counts"])
        return dict(body)

    async def mark_read(self, ids: Ids) -> dict[str, Any]:
        return await self._mark("read", ids)

    async def mark_unread(self, ids: Ids) -> dict[str, Any]:
        return await self._mark("unread", ids)

    async def mark_seen(self, ids: Ids) -> dict[str, Any]:
        return await self._mark("seen", ids)

    async def archive(self, ids: Ids) -> dict[str, Any]:
        return await self._mark("archive", ids)

    async def unarchive(self, ids: Ids) -> dict[str, Any]:
        return await self._mark("unarchive", ids)

    async def mark_all_read(self) -> dict[str, Any]:
        return await self._mark("read", None)

    async def mark_all_seen(self) -> dict[str, Any]:
        return await self._mark("seen", None)

    async def _mark(self, action: str, ids: Ids | None) -> dict[str, Any]:
        """One `inbox-mark`; the counts after it. Raises NotFound (nothing changed) for
        an id that is not an item of this inbox, Invalid for bad arguments."""
        body: dict[str, Any] = {"action": action}
        if ids is None:
            body["all"] = True
        else:
            body["ids"] = list(ids)
        ack = await self._call("inbox-mark", body)
        return dict(ack["counts"])

    async def apply(self, event: Event) -> None:
        """Follow an event handed to the application (called by the subscriber)."""
        if event.meta is None:
            return
        if event.type == "inbox-updated" and isinstance(event.payload, dict):
            counts = event.payload.get("counts")
            if isinstance(counts, dict):
                self._counts = dict(counts)
            change = dict(event.payload)
        elif event.type == "notification" and _inbox_stream(event.meta.stream):
            if self._counts is not None and not self._counts.get("countsCapped"):
                bumped = {k: min(int(self._counts.get(k, 0)) + 1, CAP)
                          for k in ("unread", "unseen")}
                capped = any(int(self._counts.get(k, 0)) >= CAP for k in ("unread", "unseen"))
                self._counts = {**bumped, "countsCapped": capped}
            change = {"added": [event.meta.id]}
        else:
            return
        counts = self.counts or {}
        for handler in list(self._handlers):
            await _call_safely(handler, counts, change)


def _inbox_stream(stream: str) -> bool:
    """A user's or a role's stream: where notifications are inbox items."""
    return stream.startswith("user-") or stream in ("clients", "technicians", "admins")


__all__ = ["Handlers", "Inbox"]
