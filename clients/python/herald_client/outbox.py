"""The offline send queue: chat messages kept in an OutboxStore until the server stores them.

- `send(entry)` saves the entry first (before any network I/O), then waits for its fate: the
  server's ack once stored, or the typed error of a refusal.
- One sender task sends the oldest entry at a time, only while connected. Without an answer
  (timeout, lost transport) the same entry is sent again: its `clientMessageId` makes the
  server store it once. `rate_limited` waits `retryAfter`; `unavailable` and `internal` back
  off; any other refusal (`invalid_argument`, `invalid_message`, `forbidden`, `not_found`,
  `conflict`, ...) is final: the entry leaves the queue and its caller gets the error.
- What a previous process left in the store is sent when the sender starts; on close (or a
  refused connection) the entries stay in the store for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import HeraldError, Unavailable, error_from_ack
from .outbox_store import OutboxStore, QueuedMessage
from .retry import Backoff

log = logging.getLogger("herald_client")
RETRY_CODES = frozenset({"rate_limited", "unavailable", "internal"})
Emit = Callable[[QueuedMessage], Awaitable[Any]]
"""Send one entry and return the server's raw ack; raise when no answer came."""
PendingHandler = Callable[[list[QueuedMessage]], Any]
"""Called (sync or async) with the whole queue after every change."""


class Outbox:
    """The queue and its single sender task (`start()` / `close()`)."""

    def __init__(self, store: OutboxStore, *, emit: Emit, online: asyncio.Event,
                 retry: Backoff, on_change: PendingHandler | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.store = store
        self._emit, self._online, self._retry, self._sleep = emit, online, retry, sleep
        self._on_change = on_change
        self._items: list[QueuedMessage] = []
        for entry in store.load():
            if not self._queued(entry.client_message_id):
                self._items.append(entry)
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped: HeraldError | None = None
        self._callbacks: set[asyncio.Future[Any]] = set()

    def pending(self) -> list[QueuedMessage]:
        """The entries waiting to be stored by the server, oldest first."""
        return list(self._items)

    async def send(self, entry: QueuedMessage) -> dict[str, Any]:
        """Queue `entry` (saved before this returns control) and return the server's ack
        once it is stored; raise the typed error if the server refuses it."""
        if not self._queued(entry.client_message_id):
            self._items.append(entry)
            self._changed(raise_errors=True)
        if self._stopped is not None:
            raise self._stopped  # queued in the store: the next process sends it
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(entry.client_message_id, []).append(future)
        self._wake.set()
        return await future

    def start(self) -> None:
        """Start the sender: it sends what is queued (also from a previous process) whenever
        `online` is set."""
        if self._task is None and self._stopped is None:
            self._task = asyncio.create_task(self._run())

    def abandon(self, error: HeraldError) -> None:
        """Stop for good: every waiting caller gets `error`; the entries stay in the store."""
        self._stopped = self._stopped or error
        if self._task is not None:
            self._task.cancel()
        for cmid in list(self._waiters):
            self._settle(cmid, None, error)

    async def close(self) -> None:
        """Stop the sender; unsent entries stay in the store, their callers get `closed`."""
        task = self._task
        self.abandon(Unavailable("the subscriber is closed; the message stays queued",
                                 code="closed"))
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*self._callbacks, return_exceptions=True)

    # -- the sender ------------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        while True:
            if not self._items:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._online.wait()
            entry = self._items[0]
            try:
                ack = await self._emit(entry)
            except Exception as exc:  # no answer: sent again (the server stores it once)
                log.info("message not acknowledged client_message_id=%s error=%s",
                         entry.client_message_id, exc)
                if self._online.is_set():
                    await self._sleep(self._retry.delay(min(attempt, 10)))
                    attempt += 1
                continue
            wait = self._retry_after(ack, attempt)
            if wait is None:
                attempt = 0
                self._finish(entry, ack)
            else:
                attempt += 1
                await self._sleep(wait)

    def _retry_after(self, ack: Any, attempt: int) -> float | None:
        """How long to wait before sending again, or None when the ack is final."""
        error = ack.get("error") if isinstance(ack, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if not isinstance(error, dict) or code not in RETRY_CODES:
            return None
        hint = error.get("retryAfter")
        if code == "rate_limited" and isinstance(hint, int | float) and hint > 0:
            return float(hint)
        return self._retry.delay(min(attempt, 10))

    def _finish(self, entry: QueuedMessage, ack: Any) -> None:
        """The server stored or refused `entry`: it leaves the queue; its callers learn."""
        self._items = [m for m in self._items if m.client_message_id != entry.client_message_id]
        self._changed(raise_errors=False)
        if isinstance(ack, dict) and ack.get("ok") is True:
            self._settle(entry.client_message_id, ack, None)
        else:
            error = error_from_ack(ack.get("error") if isinstance(ack, dict) else ack)
            log.info("message refused client_message_id=%s code=%s",
                     entry.client_message_id, error.code)
            self._settle(entry.client_message_id, None, error)

    # -- bookkeeping -----------------------------------------------------------------------
    def _queued(self, cmid: str) -> bool:
        return any(m.client_message_id == cmid for m in self._items)

    def _settle(self, cmid: str, ack: dict[str, Any] | None, error: HeraldError | None) -> None:
        for future in self._waiters.pop(cmid, []):
            if future.done():
                continue  # its caller stopped waiting
            if error is not None:
                future.set_exception(error)
            else:
                assert ack is not None
                future.set_result(ack)

    def _changed(self, *, raise_errors: bool) -> None:
        """Save the queue, then tell `on_change`. A failed save of a new entry raises (it is
        not queued); one after a removal is logged (the entry is resent, stored once)."""
        try:
            self.store.save(list(self._items))
        except Exception:
            if raise_errors:
                self._items.pop()
                raise
            log.warning("outbox save failed", exc_info=True)
        if self._on_change is None:
            return
        try:
            result = self._on_change(self.pending())
        except Exception:
            log.exception("on_pending_change raised")
            return
        if inspect.isawaitable(result):
            future = asyncio.ensure_future(result)
            self._callbacks.add(future)
            future.add_done_callback(self._callback_done)

    def _callback_done(self, future: asyncio.Future[Any]) -> None:
        self._callbacks.discard(future)
        with contextlib.suppress(asyncio.CancelledError):
            if future.exception() is not None:
                log.error("on_pending_change raised", exc_info=future.exception())


__all__ = ["RETRY_CODES", "Emit", "Outbox", "PendingHandler"]
