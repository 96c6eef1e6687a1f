"""Replay: send a socket what it missed of a stream, then hand it over to live delivery.

While a (socket, stream) replays, its gate (app/gateway/ordering.py) holds back that
stream's live events for the socket; `flush` then sends the held-back ones newer than the
replay and closes the gate with no await in between, so live events never overtake
replayed ones. A gate that went over its bound (a slow reader pacing the replay) held the
highest offset it dropped instead: `flush` reads the event table through it first. One
replay at a time per (socket, stream).

Reads are shared (`PageReads`): sockets replaying the same stream from the same offset at
about the same time — a reconnect storm — wait for one database read of that page instead
of one each (`PageReads.counts`: pages asked for and database reads, by stream kind, in
the node's /metrics); a page carries its events encoded once (Socket.IO packets, and the websocket
frames of them all, app/gateway/direct.py), so an idle websocket gets a whole page in one
write.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import socketio
from socketio.packet import EVENT
from sqlalchemy.orm import Session, sessionmaker

from app.core import jsoncodec
from app.core.errors import Gone, Unavailable
from app.gateway import direct, sendqueue
from app.gateway.manager import HeraldRedisManager
from app.gateway.ordering import Held
from app.gateway.pagetail import Gates, Tail
from app.outbox.replay import REPLAY_BATCH, Head, read_after, read_head
from app.outbox.streams import parse_stream
from app.outbox.tables import EventRecord

log = logging.getLogger("herald.gateway")
PARALLEL_FLUSHES = 64  # a catch-up's sockets sent their history and gate at once (`catch_up`)


@dataclass(eq=False)
class Page:
    """Up to `REPLAY_BATCH` events of a stream after some offset, as one read returned them."""

    events: list[EventRecord]
    started: float  # loop time when its read began
    full: bool  # as many as asked: these offsets' events never change, whenever read
    packets: list[str] | None = field(default=None, repr=False)
    frames: bytes | None = field(default=None, repr=False)
    tail: Tail | None = field(default=None, repr=False)  # live events since (not full)


PageKey = tuple[str, int, str]  # (stream, after, epoch)


class NotRead(Unavailable):
    """The socket went, or its transport was closed for not reading, before its history
    was sent: nothing is gone, its client reconnects from its positions and recovers."""


@dataclass
class PageCounts:
    """Of one kind of stream (user, role, project, ticket): pages replaying sockets asked
    for, and the database reads they cost (fewer when reads were shared)."""

    requests: int = 0
    reads: int = 0


class PageReads:
    """One database read per (stream, after, epoch) for everyone who needs it at once.

    A reader passes `since`, the time its gate opened (its replay began): a page read that
    began at or after it holds everything the reader cannot get through its gate. A full
    page holds fixed offsets and is good for anyone. A page not full with a tail (`gates`
    given: app/gateway/pagetail.py) is good for anyone too, with the live events its
    stream had since its read. So a reader takes a kept page or a read in flight when one
    of these holds; otherwise, once the read in flight (begun too early for it) ends, the
    first such reader starts the next one and the others join it. Pages are kept `keep`
    seconds (their tails closed then), at most `max_pages` of them holding at most
    `max_events` events.
    """

    def __init__(self, factory: sessionmaker[Session], *, batch: int = REPLAY_BATCH,
                 keep: float = 2.0, max_pages: int = 4096, max_events: int = 50_000,
                 gates: Gates | None = None) -> None:
        self.factory = factory
        self.gates = gates
        self.batch = batch
        self.keep = keep
        self.max_pages = max_pages
        # Pages of 1,000s of sockets' own streams (one reader each) must not push out the
        # shared rooms' pages within `keep`: the bound is on events, most pages are short.
        self.max_events = max_events
        self._kept_events = 0
        self.reads = 0  # database reads made (tests, diagnostics)
        self.counts: dict[str, PageCounts] = {}  # by stream kind (/metrics)
        self._kept: dict[PageKey, Page] = {}
        self._flights: dict[PageKey, tuple[float, asyncio.Task[Page]]] = {}

    async def read(self, stream: str, after: int, epoch: str, since: float,
                   need: int = 0, *, tails: bool = True) -> Page:
        """The events of `stream` after `after` (up to `batch`); Gone if some were pruned.

        `need`: an offset the reader knows was committed before `since` (its head, or the
        highest live event its gate dropped). A page read before `since` is good with its
        tail only if the tail reached it: a tail holds what was *published* to this node
        until now, and an event committed before `since` may still be on its way from the
        relay (the reader's own gate gets it, but the reader stops at its head).
        `tails=False`: no kept page on the strength of its tail (a catch-up: live delivery,
        which tails rest on, is what failed), only full pages and reads begun at `since`.
        """
        key = (stream, after, epoch)
        self._counts(stream).requests += 1
        loop = asyncio.get_running_loop()
        while True:
            page = self._kept.get(key)
            if page is not None:
                if loop.time() - page.started > self.keep:
                    self._drop(key)
                elif _good(page, since, need, tails):
                    return page
            flight = self._flights.get(key)
            if flight is None:
                started = loop.time()
                tail = Tail.start(self.gates, stream)  # opened before the read begins
                task = asyncio.create_task(self._read(key, started, tail))
                task.add_done_callback(_retrieve)
                self._flights[key] = (started, task)
                return await asyncio.shield(task)
            started, task = flight
            if started >= since:
                return await asyncio.shield(task)
            await asyncio.wait([task])  # begun too early for us: wait, then look again
            page = task.result() if not task.cancelled() and task.exception() is None \
                else None
            if page is not None and _good(page, since, need, tails):
                return page

    async def _read(self, key: PageKey, started: float, tail: Tail | None) -> Page:
        stream, after, epoch = key
        page: Page | None = None
        try:
            def run() -> list[EventRecord]:
                with self.factory() as session, session.begin():
                    return read_after(session, stream, after, limit=self.batch, epoch=epoch)
            self.reads += 1
            self._counts(stream).reads += 1
            events = await asyncio.to_thread(run)
            first = events[0].offset if events else None
            if first is not None and first != after + 1:
                raise Gone(f"events of {stream} after {after} were pruned "
                           f"(check=page-start first={first})")
            page = Page(events, started, full=len(events) >= self.batch)
            if tail is not None and not page.full:
                tail.begin_at(events[-1].offset if events else after)
                page.tail = tail
            self._keep(key, page)
            asyncio.get_running_loop().call_later(self.keep, self._expire, key, page)
            return page
        finally:
            if tail is not None and (page is None or page.tail is None):
                tail.close()
            flight = self._flights.get(key)
            if flight is not None and flight[0] == started:
                del self._flights[key]

    def _counts(self, stream: str) -> PageCounts:
        kind = parse_stream(stream).kind
        counts = self.counts.get(kind)
        if counts is None:
            counts = self.counts[kind] = PageCounts()
        return counts

    def _keep(self, key: PageKey, page: Page) -> None:
        """Keep `page` (newest last); drop the expired ones and any over `max_pages`."""
        kept = self._kept
        self._drop(key)
        kept[key] = page
        self._kept_events += len(page.events)
        while kept:
            oldest = next(iter(kept))
            if (len(kept) <= self.max_pages and self._kept_events <= self.max_events
                    and page.started - kept[oldest].started <= self.keep):
                break
            self._drop(oldest)

    def _drop(self, key: PageKey) -> None:
        page = self._kept.pop(key, None)
        if page is not None:
            self._kept_events -= len(page.events)
            if page.tail is not None:
                page.tail.close()

    def _expire(self, key: PageKey, page: Page) -> None:
        if self._kept.get(key) is page:
            self._drop(key)


def _good(page: Page, since: float, need: int = 0, tails: bool = True) -> bool:
    """Whether `page` holds all a reader whose gate opened at `since` cannot get through it,
    through `need` (committed before `since`): a read begun since holds it; a tail (if
    `tails`) only once that event was published to this node."""
    return (page.full or page.started >= since
            or (tails and page.tail is not None and page.tail.extend()
                and page.tail.last >= need))


def _retrieve(task: asyncio.Task[Page]) -> None:
    if not task.cancelled():
        task.exception()  # read by the waiters; never "exception was never retrieved"


class Replayer:
    """Replays streams to sockets of one Socket.IO server, in order, without gaps."""

    def __init__(self, *, sio: socketio.AsyncServer, manager: HeraldRedisManager,
                 factory: sessionmaker[Session], metrics: Any = None,
                 drain_timeout: float = 20.0) -> None:
        self.sio = sio
        self.drain_timeout = drain_timeout  # seconds a replay waits for a socket to read
        self.pages = PageReads(factory, gates=manager)  # shared reads (reconnect storms)
        self.manager = manager
        self.factory = factory
        self.metrics = metrics
        # Per socket, per stream; a lock free and awaited by nobody is dropped on `release`
        # (an idle socket holds none), and a socket's all go at once on `forget`.
        self._locks: dict[str, dict[str, asyncio.Lock]] = {}

    def forget(self, sid: str, stream: str | None = None) -> None:
        """Drop the locks of a socket that is gone (of one stream, or all)."""
        if stream is None:
            self._locks.pop(sid, None)
            return
        locks = self._locks.get(sid)
        if locks is not None:
            locks.pop(stream, None)
            if not locks:
                del self._locks[sid]

    def lock(self, sid: str, stream: str) -> asyncio.Lock:
        """One replay at a time per (socket, stream): a second join waits for the first."""
        locks = self._locks.get(sid)
        if locks is None:
            locks = self._locks[sid] = {}
        lock = locks.get(stream)
        if lock is None:
            lock = locks[stream] = asyncio.Lock()
        return lock

    def release(self, sid: str, stream: str) -> None:
        locks = self._locks.get(sid)
        lock = locks.get(stream) if locks is not None else None
        if lock is None:
            return
        if lock.locked():
            lock.release()
        # Whoever takes it next holds or waits on it already (lock() and acquire() run
        # without an await between them); nobody does: drop it, lock() makes a new one.
        if not lock.locked() and not lock._waiters:
            self.forget(sid, stream)

    async def replay(self, sid: str, stream: str, after: int, head: Head, *,
                     read: bool = True) -> int:
        """Send events after `after`, then the live ones held back meanwhile; close the gate.

        The gate must already be open and the socket in the room. Returns the last offset
        sent. Raises Gone if events in that range vanished (pruned meanwhile).
        `read=False`: nothing to read from the event table (the gate was open before `head`
        was read and `after` is that head): only the held-back live events are sent.
        """
        since = asyncio.get_running_loop().time()  # the gate is open: reads from now on do
        try:
            last, sent = await self.history(sid, stream, after, head, since) if read \
                else (after, 0)
        except BaseException:
            self.manager.close_gate(sid, stream)
            raise
        last = await self.flush(sid, stream, last, head.epoch)
        self.manager.ordering.note_sent(sid, stream, last)
        if sent and self.metrics is not None:
            self.metrics.replayed(sent)
        if sent:
            log.info("replayed sid=%s stream=%s after=%d events=%d", sid, stream, after, sent)
        return last

    async def history(self, sid: str, stream: str, after: int, head: Head, since: float,
                      *, tails: bool = True) -> tuple[int, int]:
        """Send (sid, stream) its stored history after `after`, page by page from the shared
        reads, at the pace the socket reads (`send_page`). `since`: when its gate opened;
        `tails`: as `PageReads.read`. Returns (the last offset sent, events sent). Raises
        Gone if events through `head` vanished (pruned meanwhile) while the socket is
        still there, NotRead if the socket went or was closed for not reading first."""
        last = after
        sent = 0
        unsent = False
        # One pass: the last page (not full) was read after the gate opened (`since`), so
        # whatever commits after that read reaches the gate's buffer, sent by `flush`.
        # (A second pass for "what committed while sending" cost every socket one more read.)
        while self.manager.is_connected(sid, "/"):
            page = await self.pages.read(stream, last, head.epoch, since, head.offset,
                                         tails=tails)
            if page.events:
                if not await self.send_page(sid, page):
                    unsent = True
                    break
                last = page.events[-1].offset
                sent += len(page.events)
            if not page.full:
                last, count, whole = await self.send_tail(sid, page, last)
                sent += count
                unsent = not whole
                break
        if unsent:
            raise NotRead(f"the socket was closed before it read the events of {stream} "
                          f"after {last}: reconnect")
        if last < head.offset and self.manager.is_connected(sid, "/"):
            raise Gone(f"events of {stream} after {last} were pruned while sending them "
                       f"(check=history-head after={after} head={head.offset} "
                       f"epoch={head.epoch})")
        return last, sent

    async def catch_up(self, stream: str, sids: list[str], after: int) -> int:
        """Send every socket in `sids` the events of `stream` after `after`, then what their
        gates held back; close the gates.

        As a replay: each socket on its own (`PARALLEL_FLUSHES` at once), its history paged
        from the shared reads (`PageReads`: one database read and one encoding of a page for
        all of them) at the pace it reads, its gate holding (bounded) the live events
        meanwhile, then flushed. A slow reader slows only itself, and is never closed for a
        large gap (its transport closed after the drain timeout, as a replay's: it
        reconnects and recovers, and the others' catch-up goes on). The gates must already
        be open (and the room's channel subscribed).
        Returns the offset through which every socket still connected was sent the stream.
        Raises Gone if events after `after` were pruned, and the first error of any
        socket's once all of them ended (every gate is closed then).
        """
        def head_now() -> Head:
            with self.factory() as session, session.begin():
                return read_head(session, stream)
        since = asyncio.get_running_loop().time()  # the gates are open, the room subscribed
        try:
            head = await asyncio.to_thread(head_now)
        except BaseException:
            for sid in sids:
                self.manager.close_gate(sid, stream)
            raise
        limit = asyncio.Semaphore(PARALLEL_FLUSHES)
        sent = 0

        async def one(sid: str) -> int | None:
            nonlocal sent
            flushing = False
            try:
                async with limit:
                    try:
                        last, count = await self.history(sid, stream, after, head, since,
                                                         tails=False)
                    except NotRead:  # closed for not reading: it recovers on reconnect,
                        self.manager.close_gate(sid, stream)  # the others go on
                        return None
                    sent += count
                    flushing = True
                    return await self.flush(sid, stream, last, head.epoch)
            except BaseException:
                if not flushing:  # `flush` closes its gate itself
                    self.manager.close_gate(sid, stream)
                raise
        outcomes = await asyncio.gather(*(one(sid) for sid in sids), return_exceptions=True)
        if sent and self.metrics is not None:
            self.metrics.replayed(sent)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        lasts = [r for r in outcomes if isinstance(r, int)]
        # A socket that went meanwhile stopped early: it does not hold the mark back.
        still = [r for sid, r in zip(sids, outcomes, strict=True)
                 if isinstance(r, int) and self.manager.is_connected(sid, "/")]
        return min(still, default=max(lasts, default=after))

    async def flush(self, sid: str, stream: str, last: int, epoch: str) -> int:
        """Send the live events held back for (sid, stream) after `last`; close the gate.

        Where the gate dropped events (over its bound), they are read from the event table
        of `epoch` through the highest one dropped; then whatever the gate held meanwhile;
        all at the pace the socket reads (`send_held`). Returns the last offset sent (it
        stops early if the socket went or was closed for not reading). Raises Gone if
        dropped events are not in the table any more (the gate is closed then too).
        """
        try:
            while True:
                taken = self.manager.ordering.take(sid, stream)
                if taken.dropped is not None and taken.dropped > last:
                    last = await self.read_through(sid, stream, last, epoch, taken.dropped)
                    if last < taken.dropped:
                        break  # the socket is gone, or was closed for not reading
                elif not taken.events:
                    break
                held = [event for event in taken.events if event[0] > last]
                if held:
                    last, whole = await self.send_held(sid, held, last)
                    if not whole:
                        break  # the socket is gone, or was closed for not reading
        except BaseException:
            self.manager.close_gate(sid, stream)
            raise
        # No await between the last empty take and this: nothing slips through.
        self.manager.close_gate(sid, stream, floor=last)
        return last

    async def read_through(self, sid: str, stream: str, last: int, epoch: str,
                           through: int) -> int:
        """Send (sid, stream) the events after `last` through at least `through` from the
        event table: live events its gate dropped. Returns the last offset sent (less than
        `through` if the socket went or was closed for not reading)."""
        # Those events were published, so committed, before now: a read from now has them.
        since = asyncio.get_running_loop().time()
        sent = 0
        while last < through and self.manager.is_connected(sid, "/"):
            page = await self.pages.read(stream, last, epoch, since, through)
            if not page.events and not (page.tail is not None and page.tail.events):
                raise Gone(f"events of {stream} after {last} are not in the event table "
                           f"(check=read-through through={through} full={page.full} "
                           f"tail={page.tail is not None})")
            if page.events:
                if not await self.send_page(sid, page):
                    break
                last = page.events[-1].offset
                sent += len(page.events)
            if not page.full:  # the rest is in its tail (through `through`: `need`)
                last, count, whole = await self.send_tail(sid, page, last)
                sent += count
                if not whole:
                    break
                if last < through:
                    raise Gone(f"events of {stream} after {last} are not in the event "
                               f"table (check=read-through-short through={through})")
        if sent and self.metrics is not None:
            self.metrics.replayed(sent)
        log.info("read dropped live events from the table sid=%s stream=%s through=%d "
                 "events=%d", sid, stream, through, sent)
        return last

    async def send_page(self, sid: str, page: Page) -> bool:
        """A page's events to one socket, in order: one write of all their frames when its
        websocket writer is idle (app/gateway/direct.py) and they fit its send queue's
        bound, else through engine.io's queue at the pace the client reads
        (app/gateway/sendqueue.py). False if the socket is gone or was closed meanwhile."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return False
        if page.packets is None:
            page.packets = [self.encode(e.type, [e.payload, e.meta]) for e in page.events]
        socket = self.sio.eio.sockets.get(eio_sid)
        if socket is None:
            return False
        queue = socket.queue
        if getattr(socket, "idle", None) is not None and not _late(socket, self.sio.eio):
            if page.frames is None:
                page.frames = b"".join(direct.text_frame("4" + p) for p in page.packets)
            if (len(page.frames) <= getattr(queue, "max_bytes", len(page.frames))
                    and socket.write_frame(page.frames)):
                return True
        return await self.send_paced(sid, eio_sid, queue, page.packets) == len(page.packets)

    async def send_paced(self, sid: str, eio_sid: str, queue: Any,
                         packets: list[str]) -> int:
        """`packets` through engine.io's queue, each once the queue has room for it (at the
        pace the client reads, app/gateway/sendqueue.py); how many were sent (fewer if the
        socket did not read in time: its transport is closed then)."""
        paced = isinstance(queue, sendqueue.SendQueue)
        for sent, packet in enumerate(packets):
            if paced and not queue.has_room(len(packet)) and not await self.sio.wait_room(
                    sid, len(packet), self.drain_timeout):
                return sent
            await self.sio.eio.send(eio_sid, packet)
        return len(packets)

    async def send_tail(self, sid: str, page: Page, last: int) -> tuple[int, int, bool]:
        """The events of `page`'s tail after `last`, in order, at the pace the socket reads
        (a tail may hold more than its send queue does: live events the node received
        over the page's keep time). (The last offset sent, how many, whether all were:
        False if the socket went or was closed for not reading first.)"""
        events = [e for e in page.tail.events if e.offset > last] \
            if page.tail is not None else []
        if not events:
            return last, 0, True
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        socket = self.sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        if eio_sid is None or socket is None:
            return last, 0, False
        packets = []
        for event in events:
            if event.packet is None:
                event.packet = self.encode(event.name, event.data)
            packets.append(event.packet)
        sent = await self.send_paced(sid, eio_sid, socket.queue, packets)
        return (events[sent - 1].offset if sent else last), sent, sent == len(events)

    async def send_held(self, sid: str, held: list[Held], last: int) -> tuple[int, bool]:
        """Live events a gate held (in offset order), at the pace the socket reads: a gate
        holds up to its send queue's bound, and a paced history leaves that queue up to
        half full. (The last offset sent, whether all were: False if the socket went or
        was closed for not reading first.)"""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        socket = self.sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
        if eio_sid is None or socket is None:
            return last, False
        packets = [self.encode(name, data) for _, name, data in held]
        sent = await self.send_paced(sid, eio_sid, socket.queue, packets)
        return (held[sent - 1][0] if sent else last), sent == len(held)

    async def send_packet(self, sid: str, packet: str) -> None:
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return
        await self.sio.eio.send(eio_sid, packet)

    def encode(self, event: str, data: list[Any]) -> str:
        """The Socket.IO EVENT packet for the default namespace, JSON by app.core.jsoncodec when
        that matches python-socketio's own encoding (checked once), else by Packet."""
        if _packet_prefix_matches(self.sio.packet_class):
            return _EVENT_PREFIX + jsoncodec.dumps([event, *data]).decode()
        pkt = self.sio.packet_class(EVENT, namespace="/", data=[event, *data], binary=False)
        return str(pkt.encode())


_EVENT_PREFIX = str(EVENT)


def _late(socket: Any, eio: Any) -> bool:
    """Past its ping timeout: engine.io's own send (which closes it) must see it."""
    last_ping = socket.last_ping
    return bool(last_ping and time.time() - last_ping > eio.ping_timeout)


@functools.cache
def _packet_prefix_matches(packet_class: Any) -> bool:
    """Whether python-socketio encodes a default-namespace EVENT as its type + JSON."""
    data = ["probe", {"a": [1, None], "b": "é"}, {"offset": 1}]
    encoded = str(packet_class(EVENT, namespace="/", data=data, binary=False).encode())
    prefix, body = encoded[:len(_EVENT_PREFIX)], encoded[len(_EVENT_PREFIX):]
    try:
        return prefix == _EVENT_PREFIX and json.loads(body) == data
    except ValueError:
        return False
