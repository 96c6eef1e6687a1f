"""A bound on what a socket has queued for sending, and waiting for a socket to drain.

Every packet for a socket goes through its engine.io queue (a `SendQueue`), which its
transport's writer empties as fast as the client reads. A client that answers pings but
never reads (or reads slower than events come) would otherwise make the node hold
everything ever sent to it. So each queue counts the packets it holds and the characters
of their data; past either bound (`max_bytes`, `max_packets`) it drops what it holds,
takes nothing more and calls `on_overflow` once: the server then closes the socket's
transport (never a Socket.IO disconnect), the client reconnects with its positions and
recovers the dropped events by replay. The cost on the fan-out path is a length and two
comparisons per packet.

A replay (or anything sending a long history) instead waits for room: `wait_room`
returns once the queue is at most half full, or False after `timeout` seconds without
room (the caller then closes the transport), so a 20,000-event history is sent at the
pace the client reads it, never put on the queue ahead.

`HeraldSocket` is engine.io's socket remembering its websocket (uvicorn's protocol behind
it is what an overflow aborts: a writer blocked on a client that never reads would
otherwise hold the connection open for ever).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from engineio import async_socket, exceptions, packet

from app.gateway import heartbeat


class _Waiters(list[Any]):
    """A list in place of a deque of waiting futures (there is rarely more than one)."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class LeanQueue(asyncio.Queue[Any]):
    """asyncio.Queue (same methods, same behaviour) holding its waiters in lists and its
    items in a list read from a moving head: ~0.3 KB empty instead of ~3.4 KB."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._getters = _Waiters()
        self._putters = _Waiters()
        self._finished._waiters = _Waiters()  # type: ignore[attr-defined]

    def _init(self, maxsize: int) -> None:
        self._queue: list[Any] = []
        self._head = 0

    def _get(self) -> Any:
        items, head = self._queue, self._head
        item = items[head]
        items[head] = None
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= 1024 and 2 * head >= len(items):
            del items[:head]
            head = 0
        self._head = head
        return item

    def _put(self, item: Any) -> None:
        self._queue.append(item)

    def qsize(self) -> int:
        return len(self._queue) - self._head

    def empty(self) -> bool:
        return len(self._queue) == self._head

    def full(self) -> bool:
        return 0 < self.maxsize <= self.qsize()


class SendQueue(LeanQueue):
    """A LeanQueue of engine.io packets that counts them and their data (see module)."""

    def __init__(self, max_bytes: int, max_packets: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.max_packets = max_packets
        self.bytes = 0  # characters (or bytes) of the queued packets' data
        self.overflowed = False
        self.ended = False  # its socket went (`end`): nobody will read it any more
        self.on_overflow: Callable[[], None] | None = None
        self._roomy: asyncio.Event | None = None  # set when at most half full

    def _put(self, item: Any) -> None:
        # The fan-out's path (once per recipient): kept to a length and two comparisons.
        queue = self._queue
        if self.overflowed:
            if item is None:  # the end of the writer: always queued
                queue.append(None)
            return  # else dropped: the transport is being closed, the client will replay
        queue.append(item)
        if item is not None:
            data = item.data
            self.bytes = size = self.bytes + (len(data) if data is not None else 0)
            if size > self.max_bytes or len(queue) - self._head > self.max_packets:
                self._overflow()

    def _get(self) -> Any:
        item = super()._get()
        if item is not None:
            data = item.data
            if data is not None:
                self.bytes -= len(data)
            roomy = self._roomy
            if roomy is not None and self.has_room(0):
                roomy.set()
        return item

    def _overflow(self) -> None:
        self.overflowed = True
        self._queue.clear()
        self._head = 0
        self.bytes = 0
        # Nothing will be written of what was dropped: nobody waits on a join for it.
        self._unfinished_tasks = 0
        self._finished.set()  # type: ignore[attr-defined]
        if self._roomy is not None:
            self._roomy.set()
        if self.on_overflow is not None:
            callback, self.on_overflow = self.on_overflow, None
            callback()

    def has_room(self, size: int) -> bool:
        """Whether `size` more characters keep the queue at most half full (or it is empty)."""
        queued = len(self._queue) - self._head
        return queued == 0 or (self.bytes + size <= self.max_bytes // 2
                               and queued < self.max_packets // 2)

    def end(self) -> None:
        """Its socket went: whoever waits for room stops waiting (`wait_room` answers False)."""
        self.ended = True
        if self._roomy is not None:
            self._roomy.set()

    async def wait_room(self, size: int, timeout: float) -> bool:
        """Until `has_room(size)`; False if `timeout` seconds pass first, or it overflowed,
        or its socket went (`end`)."""
        if self.overflowed or self.ended:
            return False
        if self.has_room(size):
            return True
        if self._roomy is None:
            self._roomy = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                while not self.overflowed and not self.ended and not self.has_room(size):
                    self._roomy.clear()
                    await self._roomy.wait()
        except TimeoutError:
            return False
        return not (self.overflowed or self.ended)


def queue_factory(max_bytes: int, max_packets: int) -> Callable[..., SendQueue]:
    """engine.io's `create_queue` making SendQueues with these bounds."""
    def create(*_args: Any, **_kwargs: Any) -> SendQueue:
        return SendQueue(max_bytes, max_packets)
    return create


HEARTBEAT_WHEEL = True  # False: engine.io's ping task per socket (app/gateway/hooks.py)
LEAN_READER = True  # False: engine.io's websocket handler, its reader a task (hooks.py)


class HeraldSocket(async_socket.AsyncSocket):  # type: ignore[misc]
    """engine.io's AsyncSocket that remembers its websocket while it runs, and whose
    heartbeat is a shared timer wheel (app/gateway/heartbeat.py), not a task per socket
    sleeping `ping_interval`."""

    _ws: Any = None
    idle: Any = None  # a DirectSocket's idle writer (app/gateway/direct.py)
    reader_bounds = False  # the lean reader's timeout ends the writer (no timer of its own)
    last_ping: float | None  # engine.io's: when the last PING went out, None once answered

    def schedule_ping(self) -> None:
        if not HEARTBEAT_WHEEL:
            super().schedule_ping()
            return
        # engine.io's: only once the previous ping was answered (last_ping set).
        if self.last_ping:
            self.last_ping = None
            heartbeat.wheel_of(self.server).add(self)

    def _ping_due(self) -> None:
        """engine.io's `_send_ping` after its sleep: the PING queued, `last_ping` set (the
        queue is unbounded: `put_nowait` is what `send` awaits)."""
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.queue.put_nowait(packet.Packet(packet.PING))

    async def _websocket_handler(self, ws: Any) -> Any:
        self._ws = ws
        try:
            if self.connected or not LEAN_READER:  # an upgrade from polling: engine.io's
                return await super()._websocket_handler(ws)
            return await self._websocket_session(ws)
        finally:
            self._ws = self.idle = None

    async def _websocket_session(self, ws: Any) -> None:
        """engine.io's `_websocket_handler` for a socket that starts on the websocket (no
        upgrade), its reader in this task: each message awaited under `asyncio.timeout`
        rather than in a task of its own under `asyncio.wait_for` (a task, its coroutine,
        a future, a timer handle and a callback per socket, for the socket's life). The
        same packets, the same ends: a message over `max_http_buffer_size`, a closed
        websocket or `ping_interval + ping_timeout` seconds without a message end the
        reader; the writer is told (None queued), awaited, and the socket closed."""
        server = self.server
        self.connected = True
        self.upgraded = True
        self.reader_bounds = True
        writer_task = asyncio.ensure_future(self._websocket_writer(ws))
        server.logger.info('%s: Upgrade to websocket successful', self.sid)
        timeout = server.ping_interval + server.ping_timeout
        limit = server.max_http_buffer_size
        while True:
            try:
                async with asyncio.timeout(timeout):
                    p = await ws.wait()
            except BaseException:  # timed out, closed, cancelled: engine.io ends here too
                break
            if p is None:  # closed by the client
                break
            if len(p) > limit:  # engine.io's 'packet is too large'
                break
            try:
                await self.receive(packet.Packet(encoded_packet=p))
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                server.logger.info('Receive error -- socket is closed')
                break
            except BaseException:  # engine.io's bare except: logged, the reader goes on
                server.logger.exception('Unknown receive error')
        await self.queue.put(None)  # unlock the writer task so it can exit
        await writer_task
        await self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)

    async def _websocket_writer(self, ws: Any) -> None:
        """engine.io's websocket writer: what `poll()` returns, written in order, until
        the queue is closed (None), `poll()` times out or a write fails."""
        while True:
            try:
                packets = await self.poll()
            except exceptions.QueueEmpty:
                break
            if not packets:  # connection closed
                break
            try:
                if len(packets) > 1 and self.write_run(packets):
                    continue
                for pkt in packets:
                    await ws.send(pkt.encode())
            except BaseException:  # engine.io's bare except: any failure ends the writer
                break
        await ws.close()

    def write_run(self, packets: list[Any]) -> bool:
        """Write `packets` in one write to the transport; False: not done (a DirectSocket
        does it, app/gateway/direct.py), each is sent on its own."""
        return False

    def abort_connection(self) -> bool:
        """Abort the TCP connection under this socket's websocket (uvicorn's transport):
        its writer may be blocked on a client that never reads. True if one was aborted."""
        proto = getattr(getattr(self._ws, "asgi_send", None), "__self__", None)
        transport = getattr(proto, "transport", None)
        if transport is None or transport.is_closing():
            return False
        transport.abort()
        return True


def adopt(socket: Any) -> None:
    """Make an engine.io AsyncSocket a HeraldSocket (before any transport runs on it)."""
    if type(socket) is async_socket.AsyncSocket:
        socket.__class__ = HeraldSocket


__all__ = ["HeraldSocket", "SendQueue", "adopt", "queue_factory"]
