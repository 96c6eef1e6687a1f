"""Writing a websocket frame straight to an idle socket's transport (fan-out and replay).

engine.io sends every packet through the socket's queue: a writer task per websocket
wakes up (under `asyncio.wait_for`, a task per wake-up), takes the packets and hands each
to uvicorn, which frames it (websockets' sans-I/O protocol) and writes it. For one event
to thousands of sockets that is most of the fan-out's time. When a socket's writer is
idle — waiting on an empty queue, nothing taken and not yet written — a packet put on
the queue would be the very next thing written anyway; writing its frame to the
transport at once is the same bytes in the same order, without the wake-up.

`DirectSocket` is engine.io's `AsyncSocket` with:

- `poll()` for the websocket writer: the queue is read with `queue.get()` under
  `asyncio.timeout` (not `wait_for`, which moves the packet out of the queue in another
  task, a loop turn before the writer has it); with no timeout of its own under the lean
  reader (`HeraldSocket._websocket_session`), whose timeout already ends the writer (a
  socket silent past `ping_interval + ping_timeout` has its reader end, which queues the
  None that ends the writer; a PING every `ping_interval` keeps an idle writer waking), so
  an idle socket holds one timer, not two. So a packet stays in the queue until the
  writer itself takes it, and `idle` (the uvicorn protocol to write to) is set only while
  the writer waits on an empty queue and is cleared in the same step that takes a
  packet. Long-polling (and the polling half of an upgrade) keeps engine.io's own poll.
- `write_frame(frame)`: writes a prepared frame when the writer is idle, the queue empty,
  and uvicorn's protocol open, handshaken, not closing, not paused by flow control and
  without extensions (per-message deflate frames differ per socket); False otherwise,
  and the caller puts the packet on the queue as engine.io would.

Order per socket holds: a direct write happens only when nothing is queued or in the
writer's hands, and anything queued later (ping, a python-socketio emit, the CLOSE) is
written after it. The frame is `websockets.frames.Frame(TEXT, data).serialize(mask=False)`,
what uvicorn's `conn.send_text(data)` appends for a server without extensions.

Only uvicorn's websockets sans-I/O protocol (its default with `websockets` installed) is
recognised; under any other server or protocol nothing is written directly.

Fewer writes (`connect_writes`): the packets the writer takes at once (the CONNECT ack
and the `connected` event behind it; events that came in one loop turn), all text, go in
one transport write; and a session that starts on the websocket has uvicorn's 101
response and engine.io's OPEN packet (queued before the accept) in one write: the 101 is
held (`_Held`, for the accept call only) and written with the OPEN's frame. A connect
costs two writes instead of four; each was a system call on the event loop.

`adopt(socket)` turns an engine.io socket into a DirectSocket (called on engine.io's
`connect`, before any transport runs); `install(sio, enabled)` hooks that into a
python-socketio server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from engineio import async_socket
from engineio import exceptions as eio_exceptions
from engineio.async_drivers import asgi as async_asgi
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from app.gateway.sendqueue import HeraldSocket

_SANSIO: type[Any] | None
try:  # uvicorn's default websocket protocol when `websockets` is installed
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    _SANSIO = WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - another server: no direct writes
    _SANSIO = None

OPEN = State.OPEN
# False: a write per packet (engine.io's writer, uvicorn's accept alone): app/gateway/hooks.py
CONNECT_WRITES = True


def text_frame(text: str) -> bytes:
    """The websocket frame a server writes for the text message `text` (no extensions)."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def _protocol_of(ws: Any) -> Any | None:
    """uvicorn's protocol behind engine.io's ASGI websocket wrapper, if one we can write to."""
    send = getattr(ws, "asgi_send", None)
    proto = getattr(send, "__self__", None)
    if _SANSIO is None or not isinstance(proto, _SANSIO):
        return None
    if proto.conn.extensions:  # per-message deflate: frames are per socket
        return None
    return proto


class DirectSocket(HeraldSocket):
    """engine.io's AsyncSocket whose idle websocket writer can be bypassed (see module)."""

    # uvicorn's protocol while the websocket writer waits on an empty queue (`idle`,
    # declared on HeraldSocket, whose websocket handler clears it when the websocket ends).

    async def poll(self) -> list[Any]:
        ws = self._ws
        if ws is None or not self.upgraded:
            return await super().poll()  # type: ignore[no-any-return]
        # The websocket writer (after an upgrade no long-poll reads the queue).
        queue = self.queue
        timeout = self.server.ping_interval + self.server.ping_timeout
        try:
            if queue.empty():
                self.idle = _protocol_of(ws)
            try:
                if self.reader_bounds:  # the reader's timeout ends this writer (None queued)
                    pkt = await queue.get()
                else:
                    async with asyncio.timeout(timeout):
                        pkt = await queue.get()
            finally:
                self.idle = None  # taken (or gone): busy until it calls poll again
            queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise eio_exceptions.QueueEmpty() from None
        if pkt is None:
            return []
        packets = [pkt]
        while not queue.empty():
            pkt = queue.get_nowait()
            queue.task_done()
            if pkt is None:
                queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets

    def write_frame(self, frame: bytes) -> bool:
        """Write `frame` now if the writer is idle and the connection open; else False."""
        proto = self.idle
        if proto is None or not self.queue.empty() or not self._open(proto):
            return False
        proto.transport.write(frame)
        return True

    def _open(self, proto: Any) -> bool:
        """Whether a frame may go straight to `proto`'s transport: this socket not closing,
        the websocket open, handshaken, not paused by flow control, not closing."""
        return not (self.closing or self.closed or not proto.writable.is_set()
                    or proto.close_sent or proto.disconnected or proto.conn.state is not OPEN
                    or proto.transport.is_closing())

    def write_run(self, packets: list[Any]) -> bool:
        """The writer's packets taken at once (the CONNECT ack and `connected`; events
        that came in one loop turn), all text: their frames in one transport write (one
        system call instead of one each), the same bytes in the same order."""
        proto = _protocol_of(self._ws) if CONNECT_WRITES else None
        if proto is None or not self._open(proto) or any(p.binary for p in packets):
            return False
        proto.transport.write(b"".join(text_frame(p.encode()) for p in packets))
        return True

    async def _upgrade_websocket(self, environ: dict[str, Any]) -> Any:
        """engine.io's, for a session that starts on the websocket (no long-polling first)
        under uvicorn's sans-I/O protocol: the handshake's 101 response and the packets
        queued already (engine.io's OPEN) in one transport write, not one write for the
        101 and a writer's turn and a write for the OPEN. engine.io's own otherwise."""
        proto = getattr(environ.get("asgi.send"), "__self__", None)
        if (not CONNECT_WRITES or self.connected or self.upgraded or _SANSIO is None
                or not isinstance(proto, _SANSIO) or proto.handshake_complete
                or self.server._async.get("websocket") is not async_asgi.WebSocket):
            return await super()._upgrade_websocket(environ)
        ws = async_asgi.WebSocket(self._websocket_handler, self.server)
        ws.asgi_receive = environ["asgi.receive"]
        ws.asgi_send = environ["asgi.send"]
        await self._accept(ws, proto)
        # This frame lasts as long as the websocket: it holds no more than engine.io's.
        await self._websocket_handler(ws)
        return ""  # engine.io's WebSocket: no response of its own

    async def _accept(self, ws: Any, proto: Any) -> None:
        """uvicorn's accept (the 101), written with the frames of what the queue holds."""
        held = _Held(proto.transport)
        proto.transport = held
        try:
            await ws.asgi_send({"type": "websocket.accept"})
        finally:
            proto.transport = held.transport
            data = b"".join(held.data)
            if proto.transport.is_closing():
                data = b""
            elif data and _protocol_of(ws) is not None and self._open(proto):
                data += self._take_queued()
            if data:
                proto.transport.write(data)

    def _take_queued(self) -> bytes:
        """The frames of what the queue holds, taken from it, if all are text packets;
        else nothing is taken (b"")."""
        queue = self.queue
        taken = []
        while not queue.empty():
            taken.append(queue.get_nowait())
            queue.task_done()
        if all(p is not None and not p.binary for p in taken):
            return b"".join(text_frame(p.encode()) for p in taken)
        for p in taken:  # put back, in order: the writer sends them
            queue.put_nowait(p)
        return b""


class _Held:
    """A transport that keeps what is written to it (`data`) for one write later; anything
    else is the transport's own."""

    __slots__ = ("data", "transport")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(bytes(data))

    def is_closing(self) -> bool:
        return bool(self.transport.is_closing())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def adopt(socket: Any) -> None:
    """Make an engine.io AsyncSocket a DirectSocket (before any transport runs on it)."""
    if type(socket) in (async_socket.AsyncSocket, HeraldSocket):
        socket.__class__ = DirectSocket


def install(sio: Any, enabled: Callable[[], bool]) -> None:
    """Adopt every new engine.io socket of `sio` while `enabled()` (the fast fan-out)."""
    eio = sio.eio
    handler = eio.handlers.get("connect")
    if handler is None or getattr(handler, "_herald_direct", False):
        return

    async def connect(eio_sid: str, environ: dict[str, Any]) -> Any:
        if enabled():
            socket = eio.sockets.get(eio_sid)
            if socket is not None:
                adopt(socket)
        return await handler(eio_sid, environ)

    connect._herald_direct = True  # type: ignore[attr-defined]
    eio.on("connect", connect)


def switch_off() -> None:
    """No direct writes from now on: no writer is ever idle (app/gateway/hooks.py)."""
    global _SANSIO
    _SANSIO = None


def connect_writes_off() -> None:
    """A write per packet from now on (app/gateway/hooks.py)."""
    global CONNECT_WRITES
    CONNECT_WRITES = False


__all__ = ["DirectSocket", "adopt", "connect_writes_off", "install", "switch_off",
           "text_frame"]
