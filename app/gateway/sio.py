"""python-socketio's AsyncServer with the bounds a hostile client needs.

- An engine.io session that never sends the Socket.IO CONNECT is closed after
  `connect_timeout` seconds (python-socketio keeps it forever otherwise).
- A binary event's attachments count toward the frame limit together: engine.io bounds
  each message, not the packet they make up, so 150 attachments of 999 KB each would
  otherwise be held in memory. Past the limit the connection closes.
- `close_transport(sid)` and `close_transports()` close one or every engine.io transport
  (not a Socket.IO disconnect, which official clients treat as final): clients reconnect
  and recover.
- A client event reaches a handler only under an application event's name, never a
  reserved one (`connect`, `disconnect`, ...); the others are answered `unknown_event`,
  rate-limited per socket, their log lines within a node-wide budget
  (app/gateway/events.py). A client's DISCONNECT packet closes its transport, and so
  does a packet python-socketio cannot decode (one budgeted log line, no traceback).
- Each socket's send queue is bounded (app/gateway/sendqueue.py): past the bound its
  transport is closed and its TCP connection aborted (a writer blocked on a client that
  never reads would hold it open); `wait_room(sid, ...)` paces a replay by the socket's
  drain.

And what ten thousand idle sockets on one node cost (docs/benchmarks.md):
- engine.io's per-socket queue is a `LeanQueue`: asyncio's Queue with lists for its
  waiters and items instead of four deques (760 bytes each, empty);
- the handshake's environ drops `wsgi.input` once the session exists: engine.io's ASGI
  driver defines a class per request for it (~2.4 KB), kept as long as the websocket;
- a websocket opened directly (no long-polling first) under uvicorn's sans-I/O protocol
  gets a LeanQueue for its incoming messages too, and a list for the waiters of its
  flow-control event, swapped in at the handshake, before anything waits on them;
- once a socket is connected its handshake environ keeps no request headers but the
  Authorization, and uvicorn's protocol lets go of the handshake's request and response;
- session ids come from one `os.urandom` read per 1,024 ids (same format and entropy as
  engine.io's: 12 random bytes and a sequence number), not a system call per id.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs

import engineio
import socketio
from socketio import packet as sio_packet
from websockets.datastructures import Headers

from app.gateway import environ as eio_environ
from app.gateway import sendqueue
from app.gateway.events import RESERVED, LogBudget, UnknownEvents
from app.gateway.sendqueue import LeanQueue, _Waiters

NOT_READING_KEPT = 4096  # sockets closed for not reading that `closed_for_not_reading` knows

log = logging.getLogger("herald.gateway")


class SessionIds:
    """engine.io's `generate_id` (base64 of 12 random bytes and a 3-byte sequence number,
    '/' and '+' replaced), the random bytes read 1,024 ids at a time."""

    CHUNK = 12 * 1024

    def __init__(self, eio: Any) -> None:
        self.eio = eio
        self._random = b""
        self._at = 0

    def __call__(self) -> str:
        if self._at + 12 > len(self._random):
            self._random, self._at = secrets.token_bytes(self.CHUNK), 0
        random, self._at = self._random[self._at:self._at + 12], self._at + 12
        eio = self.eio
        raw = base64.b64encode(random + eio.sequence_number.to_bytes(3, "big"))
        eio.sequence_number = (eio.sequence_number + 1) & 0xFFFFFF
        return raw.decode("utf-8").replace("/", "_").replace("+", "-")


LEAN = True  # False: uvicorn's queues left as they are (app/gateway/hooks.py)
KEPT_HEADERS = frozenset({"HTTP_AUTHORIZATION"})  # what the connect handler reads


def _trim_environ(environ: dict[str, Any] | None) -> None:
    """A connected socket's handshake environ without the request headers, which nothing
    reads again (a later CONNECT on the same session reads only the Authorization); and,
    for a websocket under uvicorn's sans-I/O protocol whose handshake is complete, the
    handshake's request and response (uvicorn reads them only to accept) and the ASGI
    scope's raw headers (read by the middlewares and engine.io at the start only)."""
    if environ is None:
        return
    for key in [k for k in environ if k.startswith("HTTP_") and k not in KEPT_HEADERS]:
        del environ[key]
    proto: Any = getattr(environ.get("asgi.receive"), "__self__", None)
    if getattr(proto, "handshake_complete", False) is True and hasattr(proto, "request"):
        # The request lives on in the suspended frame of websockets' parser (a local of
        # ServerProtocol.parse for the connection's life): its headers emptied in place.
        headers = getattr(proto.request, "headers", None)
        if isinstance(headers, Headers):
            headers.clear()
        proto.request = proto.response = None
        scope = environ.get("asgi.scope")
        if isinstance(scope, dict) and scope.get("type") == "websocket":
            scope["headers"] = []


def _exactly(value: Any, cls: type) -> bool:
    return type(value) is cls


def _slim_websocket(environ: dict[str, Any]) -> None:
    """uvicorn's protocol behind this websocket handshake, if any: its receive queue a
    LeanQueue and its `writable` event's waiters a list (nothing waits on them yet)."""
    if not LEAN:
        return
    proto: Any = getattr(environ.get("asgi.receive"), "__self__", None)
    queue: Any = getattr(proto, "queue", None)
    if _exactly(queue, asyncio.Queue) and not queue._getters:
        lean = LeanQueue()
        while not queue.empty():
            lean.put_nowait(queue.get_nowait())
        proto.queue = lean
    writable: Any = getattr(proto, "writable", None)
    if _exactly(writable, asyncio.Event) and not writable._waiters:
        writable._waiters = _Waiters()


class HeraldEngineIO(engineio.AsyncServer):  # type: ignore[misc]
    """engine.io's AsyncServer, but a long-poll POST to a session that is closed and not yet
    swept is answered 400 like one to an unknown session (engine.io's own path raises
    KeyError('Session is disconnected') there, outside its error handling: a 500).
    Requests are translated without a class made per request (app/gateway/environ.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        eio_environ.install(self)

    def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        # The awaitable of engine.io's own (not a coroutine of ours around it): nothing
        # of this frame stays suspended for a websocket's whole life.
        scope = args[0] if args else None
        if isinstance(scope, dict) and scope.get("type") == "http" \
                and scope.get("method") == "POST":
            self._forget_if_closed(scope)
        return super().handle_request(*args, **kwargs)

    def _forget_if_closed(self, scope: dict[str, Any]) -> None:
        query = parse_qs(bytes(scope.get("query_string") or b"").decode("latin-1"))
        sid = (query.get("sid") or [""])[0]
        socket = self.sockets.get(sid) if sid else None
        if socket is not None and socket.closed:
            self.sockets.pop(sid, None)


class HeraldServer(socketio.AsyncServer):  # type: ignore[misc]
    def _engineio_server_class(self) -> type[Any]:
        return HeraldEngineIO

    def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        """python-socketio's (`return await self.eio.handle_request(...)`) without its
        coroutine frame, which a websocket would hold for its whole life."""
        return self.eio.handle_request(*args, **kwargs)

    def __init__(self, *args: Any, connect_timeout: float = 10.0,
                 queue_bytes: int = 2 * 2**20, queue_packets: int = 5000,
                 unknown_events_per_minute: int = 60, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout
        # Each socket's send queue is bounded (app/gateway/sendqueue.py).
        self.eio.create_queue = sendqueue.queue_factory(queue_bytes, queue_packets)
        self.overflows = 0  # transports closed for a send queue over its bounds
        # The Socket.IO sids whose transport this node closed for not reading (a send queue
        # over its bounds, or not drained in time), the latest NOT_READING_KEPT: a join
        # that ends because its socket went tells this from a client that hung up.
        self._not_reading: OrderedDict[str, None] = OrderedDict()
        self.unknown = UnknownEvents(unknown_events_per_minute)
        self.log_budget = LogBudget()
        self._closing: set[asyncio.Task[None]] = set()
        self.eio.generate_id = SessionIds(self.eio)
        self._binary_bytes: dict[str, int] = {}
        # One timer handle per session until its CONNECT (no task sleeping per socket).
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._expiring: set[asyncio.Task[None]] = set()
        # Who waits for a session's CONNECT packet to be out (`until_connected`).
        self._connect_waiters: dict[str, asyncio.Future[bool]] = {}
        # sid -> a packet to send right behind its CONNECT ack (`send_behind_connect`).
        self._behind_connect: dict[str, str] = {}

    # -- sessions that never connect ---------------------------------------------------
    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        # engine.io reads no body of a handshake; the class behind this one stays alive as
        # long as the websocket otherwise (the environ is kept for the connect handler).
        environ.pop("wsgi.input", None)
        _slim_websocket(environ)
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None:
            sendqueue.adopt(socket)
            queue = socket.queue
            if isinstance(queue, sendqueue.SendQueue):
                queue.on_overflow = lambda: self._overflowed(eio_sid)
        result = await super()._handle_eio_connect(eio_sid, environ)
        self._timers[eio_sid] = asyncio.get_running_loop().call_later(
            self.connect_timeout, self._connect_overdue, eio_sid)
        return result

    async def _handle_connect(self, eio_sid: str, namespace: Any, data: Any) -> None:
        try:
            await super()._handle_connect(eio_sid, namespace, data)
        finally:
            sid = self.manager.sid_from_eio_sid(eio_sid, "/")
            connected = sid is not None and self.manager.is_connected(sid, "/")
            if sid is not None:
                self._cancel_timer(eio_sid)  # connected: nothing to expect any more
                _trim_environ(self.environ.get(eio_sid))
                if connected and (namespace or "/") == "/":
                    await self._send_behind_connect(eio_sid, sid)
            self._connect_answered(eio_sid, connected)

    def send_behind_connect(self, sid: str, packet: str) -> None:
        """Send `packet` (a Socket.IO packet of the default namespace, e.g. "2[...]") right
        behind the CONNECT ack of `sid`, in the same loop turn: the socket's writer takes
        both at once (one write, app/gateway/direct.py). Called by the connect handler;
        what is not sent so (the session refused, another CONNECT on it meanwhile) is
        left for `take_behind_connect`."""
        self._behind_connect[sid] = packet

    def take_behind_connect(self, sid: str) -> str | None:
        """The packet `send_behind_connect` left for `sid` and that was not sent (None:
        sent, or none): the caller sends it itself, or drops it."""
        return self._behind_connect.pop(sid, None)

    async def _send_behind_connect(self, eio_sid: str, sid: str) -> None:
        packet = self._behind_connect.pop(sid, None)
        if packet is None:
            return
        try:
            await self.eio.send(eio_sid, packet)
        except Exception:  # the socket went meanwhile: left to the caller's own path
            self._behind_connect[sid] = packet

    async def until_connected(self, sid: str, timeout: float) -> bool:
        """Once the CONNECT packet of `sid` is out (its connect handler returned): True;
        False if the session is refused or gone first, or after `timeout` seconds."""
        manager = self.manager
        if manager.is_connected(sid, "/"):
            return True
        eio_sid = manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None or not manager.is_pre_connected(sid, "/"):
            return False
        future = self._connect_waiters.get(eio_sid)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._connect_waiters[eio_sid] = future
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            return False
        finally:
            if future.done() or self._connect_waiters.get(eio_sid) is future:
                self._connect_waiters.pop(eio_sid, None)

    def _connect_answered(self, eio_sid: str, connected: bool) -> None:
        future = self._connect_waiters.pop(eio_sid, None)
        if future is not None and not future.done():
            future.set_result(connected)

    def _cancel_timer(self, eio_sid: str) -> None:
        timer = self._timers.pop(eio_sid, None)
        if timer is not None:
            timer.cancel()

    def _connect_overdue(self, eio_sid: str) -> None:
        self._timers.pop(eio_sid, None)
        task = asyncio.ensure_future(self._expect_connect(eio_sid))
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def _expect_connect(self, eio_sid: str) -> None:
        if self.manager.sid_from_eio_sid(eio_sid, "/") is None:
            log.info("engine.io session closed: no CONNECT within %ss", self.connect_timeout)
            await self._close_transport(eio_sid)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        self._cancel_timer(eio_sid)
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and isinstance(socket.queue, sendqueue.SendQueue):
            socket.queue.end()  # a replay waiting for the client to read stops waiting
        self._connect_answered(eio_sid, False)
        self._binary_bytes.pop(eio_sid, None)
        self.unknown.forget(eio_sid)
        await super()._handle_eio_disconnect(eio_sid, reason)

    # -- binary attachments --------------------------------------------------------------
    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if eio_sid in self._binary_packet:
            total = self._binary_bytes.get(eio_sid, 0) + len(data) + 64
            if total > self.eio.max_http_buffer_size:
                del self._binary_packet[eio_sid]
                self._binary_bytes.pop(eio_sid, None)
                log.info("connection closed: binary packet over %d bytes",
                         self.eio.max_http_buffer_size)
                await self._close_transport(eio_sid)
                return
            self._binary_bytes[eio_sid] = total
        elif isinstance(data, str) and data[:1] in ("5", "6"):  # a binary event/ack header
            self._binary_bytes[eio_sid] = len(data)
        try:
            await super()._handle_eio_message(eio_sid, data)
        except Exception as exc:
            # A packet python-socketio cannot decode or place (an unknown type, bad JSON,
            # an attachment without its header...): one bounded line, not a traceback per
            # frame, and the transport closed (the client is not speaking Socket.IO).
            self._binary_packet.pop(eio_sid, None)
            self._binary_bytes.pop(eio_sid, None)
            left_out = self.log_budget.take()
            if left_out is not None:
                log.info("malformed packet, transport closed error=%s packet=%.20r "
                         "left_out=%d", type(exc).__name__, data, left_out)
            await self._close_transport(eio_sid)
            return
        if eio_sid not in self._binary_packet:
            self._binary_bytes.pop(eio_sid, None)
        if (isinstance(data, str) and data[:1] == "1"
                and self.manager.sid_from_eio_sid(eio_sid, "/") is None):
            # The client left the namespace (a DISCONNECT packet): nothing is left on this
            # transport, which would otherwise stay open without counting as a connection.
            await self._close_transport(eio_sid)

    # -- client events -------------------------------------------------------------------
    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None,
                            data: Any) -> None:
        """A client event reaches a handler only under an application event's name
        (app/gateway/events.py); any other is answered `unknown_event` and touches nothing."""
        event = data[0] if isinstance(data, list) and data else None
        if (isinstance(event, str) and event not in RESERVED
                and event in self.handlers.get(namespace or "/", ())):
            await super()._handle_event(eio_sid, namespace, id, data)
            return
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            return
        answer, worth_a_line = self.unknown.answer(eio_sid, event)
        if worth_a_line:
            left_out = self.log_budget.take()
            if left_out is not None:
                log.info("unknown event sid=%s event=%.50r code=%s left_out=%d", sid, event,
                         answer["error"]["code"], left_out)
        if id is not None:
            await self._send_packet(eio_sid, self.packet_class(
                sio_packet.ACK, namespace=namespace, id=id, data=[answer]))

    # -- send queues ---------------------------------------------------------------------
    def _overflowed(self, eio_sid: str) -> None:
        """A socket's send queue went past its bounds (called from inside the queue)."""
        self.overflows += 1
        task = asyncio.ensure_future(self._close_overflowed(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_overflowed(self, eio_sid: str) -> None:
        socket = self.eio.sockets.get(eio_sid)
        sid = self.manager.sid_from_eio_sid(eio_sid, "/")
        self._closed_not_reading(sid)
        if self.log_budget.take() is not None:
            log.warning("send queue over its bounds, transport closed sid=%s", sid)
        await self._close_transport(eio_sid)
        if isinstance(socket, sendqueue.HeraldSocket):
            socket.abort_connection()

    async def wait_room(self, sid: str, size: int, timeout: float) -> bool:
        """Until the send queue of `sid` has room for `size` more (at most half full);
        False if the socket is gone, or after `timeout` seconds, when its transport is
        closed: the client reconnects and recovers by replay."""
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        socket = self.eio.sockets.get(eio_sid) if eio_sid is not None else None
        if eio_sid is None or socket is None or socket.closed or socket.closing:
            return False
        queue = socket.queue
        if not isinstance(queue, sendqueue.SendQueue) or queue.has_room(size):
            return True
        if await queue.wait_room(size, timeout):
            return True
        if not queue.overflowed and not queue.ended:
            if self.log_budget.take() is not None:
                log.warning("socket did not drain in %ss, transport closed sid=%s",
                            timeout, sid)
            self.overflows += 1
            self._closed_not_reading(sid)
            await self._close_transport(eio_sid)
            if isinstance(socket, sendqueue.HeraldSocket):
                socket.abort_connection()
        return False

    def _closed_not_reading(self, sid: str | None) -> None:
        if sid is None:
            return
        self._not_reading[sid] = None
        self._not_reading.move_to_end(sid)
        while len(self._not_reading) > NOT_READING_KEPT:
            self._not_reading.popitem(last=False)

    def closed_for_not_reading(self, sid: str) -> bool:
        """True if this node closed the transport of `sid` for not reading (recently: the
        last NOT_READING_KEPT such sockets), False if it went otherwise or is still open."""
        return sid in self._not_reading

    # -- closing -------------------------------------------------------------------------
    async def _close_transport(self, eio_sid: str) -> None:
        """Close one engine.io transport as a transport failure, never waiting on the client.

        engine.io's `disconnect()` sends a CLOSE packet (python clients take it as final),
        waits for the client to read its queue (a long-poll cancelled at shutdown never
        does) and leaves a websocket open until the client hangs up (a hostile one never
        does). Here: abort (no CLOSE packet, no wait), then a None on the socket's queue
        ends its writer, which closes the websocket.
        """
        socket = self.eio.sockets.get(eio_sid)
        if socket is None:
            return
        try:
            await socket.queue.put(None)  # ends a websocket's writer, or a pending long-poll
            await socket.close(wait=False, abort=True, reason=self.eio.reason.TRANSPORT_CLOSE)
        except Exception as exc:  # already gone
            log.info("transport close failed error=%s", type(exc).__name__)
        self.eio.sockets.pop(eio_sid, None)

    async def close_transport(self, sid: str) -> None:
        """Close the transport of the Socket.IO session `sid` as above: its client
        reconnects with its positions and recovers."""
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            await self._close_transport(eio_sid)

    async def close_transports(self) -> int:
        """Close every engine.io transport of this node; the number closed."""
        sids = list(self.eio.sockets)
        for eio_sid in sids:
            await self._close_transport(eio_sid)
        return len(sids)


__all__ = ["HeraldServer"]
