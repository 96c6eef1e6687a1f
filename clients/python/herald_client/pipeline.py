"""The ordered pipeline of a subscriber: what arrives (events, `connected`, join acks) is
handled one item at a time, in arrival order, so a gap is repaired before anything after it.

It decides with the Tracker (dedupe, gap, reset), fetches gaps over the History, calls
`on_reset`, hands events to the application's queue, and saves positions in the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .errors import Forbidden, Gone, HeraldError, NotFound
from .history import PAGE, History
from .storage import PositionStore
from .tracker import Tracker, Verdict
from .types import Event, Meta, Position, resolve

log = logging.getLogger("herald_client")
ResetHandler = Callable[[str, Position], Any]


class Pipeline:
    """Inbound items in, de-duplicated and gap-free events out (`out`)."""

    def __init__(self, *, storage: PositionStore, history: History,
                 on_reset: ResetHandler | None, connected: Callable[[], None]) -> None:
        self.storage = storage
        self._stored = storage.load()
        self.tracker = Tracker(self._stored)
        self.history = history
        self.on_reset = on_reset
        self._connected = connected
        self.inbound: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.out: asyncio.Queue[Any] = asyncio.Queue()
        self.tasks: set[asyncio.Task[Any]] = set()

    def put(self, item: tuple[Any, ...]) -> None:
        self.inbound.put_nowait(item)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> None:
        while True:
            item = await self.inbound.get()
            try:
                if item[0] == "event":
                    await self.on_event(item[1], item[2])
                elif item[0] == "ack":
                    await self.seed(item[1], item[2], item[3])
                elif item[0] == "catchup" and not await self.catch_up(item[1], item[2]):
                    self.later(item, delay=2.0)  # still failing: again (a reconnect also heals)
            except Exception:
                log.exception("event handling failed item=%s", item[0])

    async def on_event(self, name: str, args: tuple[Any, ...]) -> None:
        if name == "connected":
            await self.on_connected(args[0] if args and isinstance(args[0], dict) else {})
            return
        payload = args[0] if args else None
        meta = Meta.parse(args[1]) if len(args) > 1 else None
        if meta is None:
            self.out.put_nowait(Event(name, payload, None))  # ephemeral (typing)
            return
        event = Event(name, payload, meta)
        verdict = self.tracker.classify(meta)
        if verdict is Verdict.GAP:
            log.info("gap stream=%s have=%d got=%d", meta.stream,
                     self.tracker.seen[meta.stream].offset, meta.offset)
            if not await self.catch_up(meta.stream, meta.offset - 1):
                self.later(("catchup", meta.stream, meta.offset))
                return
        elif verdict is Verdict.RESET:
            await self.reset(meta.stream, None, Position(meta.offset - 1, meta.epoch))
        if self.tracker.classify(meta) is Verdict.DELIVER:
            self.deliver(event)

    async def on_connected(self, data: dict[str, Any]) -> None:
        positions = data.get("positions") if isinstance(data.get("positions"), dict) else {}
        recovered = data.get("recovered") if isinstance(data.get("recovered"), dict) else {}
        assert isinstance(positions, dict) and isinstance(recovered, dict)
        for stream, raw in positions.items():
            rec = recovered.get(stream)
            await self.seed(stream, Position.from_dict(raw), rec if isinstance(rec, bool)
                             else None)
        for stream, rec in recovered.items():
            if rec is False and stream not in positions and stream in self.tracker.seen:
                log.warning("stream not readable any more, forgotten stream=%s", stream)
                self.forget(stream)
        self._connected()

    async def seed(self, stream: str, head: Position, recovered: bool | None) -> None:
        new = stream not in self.tracker.seen
        if self.tracker.seed(stream, head, recovered):
            await self.reset(stream, head)
        elif new:
            self.commit(stream, head)

    async def catch_up(self, stream: str, upto: int) -> bool:
        """Deliver the stream's events up to offset `upto` from the HTTP history; False if
        that failed for now (a later attempt or the next reconnect repairs it)."""
        try:
            while True:
                have = self.tracker.seen.get(stream)
                if have is None or have.offset >= upto:
                    return True
                events, head = await self.history.page(stream, have.offset,
                                                        min(PAGE, upto - have.offset))
                if have.epoch is not None and head.epoch != have.epoch:
                    await self.reset(stream, head)
                    return True
                for event in events:
                    assert event.meta is not None
                    if self.tracker.classify(event.meta) is Verdict.DELIVER:
                        self.deliver(event)
                if not events or have.offset >= head.offset:
                    return True
        except Gone:
            await self.reset(stream, None, None)
            return True
        except (Forbidden, NotFound) as exc:
            log.warning("stream not readable any more, forgotten stream=%s code=%s",
                        stream, exc.code)
            self.forget(stream)
            return True
        except HeraldError as exc:
            log.warning("gap repair failed stream=%s error=%s", stream, exc.code)
            return False

    async def reset(self, stream: str, head: Position | None,
                     fallback: Position | None = None) -> None:
        """The stream cannot be recovered: continue from its head and tell the application."""
        if head is None:
            try:
                head = await self.history.head(stream)
            except HeraldError:
                if fallback is None:
                    raise
                head = fallback
        self.tracker.reset(stream, head)
        self.commit(stream, head, force=True)
        log.warning("stream reset stream=%s offset=%d epoch=%s", stream, head.offset, head.epoch)
        if self.on_reset is not None:
            await resolve(self.on_reset, stream, head)

    def later(self, item: tuple[Any, ...], delay: float = 1.0) -> None:
        async def put() -> None:
            await asyncio.sleep(delay)
            self.inbound.put_nowait(item)
        self.spawn(put())

    def deliver(self, event: Event) -> None:
        assert event.meta is not None
        self.tracker.advance(event.meta)
        self.out.put_nowait(event)

    # -- storage ---------------------------------------------------------------------------
    def commit(self, stream: str, pos: Position, force: bool = False) -> None:
        old = self._stored.get(stream)
        if not force and old is not None and stream in self.tracker.seen:
            if old.epoch is not None and pos.epoch is not None and old.epoch != pos.epoch:
                return  # a reset came in between: that head stands
            if pos.offset <= old.offset and (old.epoch is not None or pos.epoch is None):
                return
        if not force and stream not in self.tracker.seen:
            return  # left meanwhile
        self._stored[stream] = pos
        self.save()

    def forget(self, stream: str) -> None:
        self.tracker.leave(stream)
        if self._stored.pop(stream, None) is not None:
            self.save()

    def save(self) -> None:
        try:
            self.storage.save(self._stored)
        except Exception:
            log.exception("saving positions failed")
