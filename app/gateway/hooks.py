"""The private hooks the gateway uses in python-socketio, python-engineio, uvicorn,
websockets and asyncio, checked once at start (docs/fastpaths.md).

Each fast path leans on internals that no semver protects. `check()` looks for each one
on the installed versions (classes, a throwaway instance, or the source line that calls
it); `apply(gateway)` switches off every fast path with a hook missing — the plain path
python-socketio or engine.io would take is used instead — and logs one line per path
that fell back. Protections that override a private method (connect timeout, binary
bound, subscription retries) cannot fall back: a missing hook is logged as an error.
The result is the `herald_fastpath_enabled{path}` metric.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import engineio
import socketio
from engineio import async_server, async_socket
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as eio_asgi
from socketio import async_pubsub_manager
from socketio import packet as sio_packet

from app.core import slotted_ws
from app.gateway import direct, sendqueue
from app.gateway import environ as eio_environ
from app.gateway import sio as sio_module
from app.gateway.replay import _packet_prefix_matches

log = logging.getLogger("herald.gateway.hooks")

# path -> what runs instead when it is off
FASTPATHS = {
    "inline_fanout": "python-socketio's emit (a task per socket)",
    "direct_writes": "engine.io's queue and websocket writer",
    "lean_queues": "asyncio.Queue per socket, uvicorn's own receive queue",
    "session_ids": "engine.io's generate_id (a system call per id)",
    "json_packets": "python-socketio's Packet encoding per replayed event",
    "trim_environ": "handshake headers and request kept per socket",
    "heartbeat_wheel": "engine.io's ping task per socket",
    "lean_reader": "engine.io's websocket handler (a reader task per socket)",
    "connect_writes": "a write per packet (engine.io's writer, uvicorn's accept alone)",
    "payload_class": "engine.io's translate_request (a class made per request)",
    "lean_upgrade": "uvicorn's upgrade (the head written out and parsed again by websockets)",
}
PROTECTIONS = ("connect_timeout", "binary_bound", "close_transport", "subscription_retry")


@dataclass(frozen=True)
class Hook:
    path: str  # a FASTPATHS or PROTECTIONS key
    what: str  # the internal, as docs/fastpaths.md names it
    check: Callable[[], bool]


def _calls(func: Any, text: str) -> bool:
    """Whether `func`'s source contains `text` (the call that makes a hook reachable)."""
    return text in inspect.getsource(func)


def _same_source(func: Any, sha256: str) -> bool:
    """Whether `func`'s source is the one a fast path copied (its sha256 digest)."""
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest() == sha256


def _has(obj: Any, *names: str) -> bool:
    return all(hasattr(obj, name) for name in names)


@functools.cache
def _eio() -> Any:
    return engineio.AsyncServer(async_mode="asgi")


@functools.cache
def _socket() -> Any:
    return async_socket.AsyncSocket(_eio(), "probe")


@functools.cache
def _uvicorn() -> Any:
    """A throwaway uvicorn sans-I/O websocket protocol (None without one)."""
    if direct._SANSIO is None:
        return None
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    # log_config=None: uvicorn's Config would otherwise install its own logging (dictConfig)
    config = Config(app=_no_app, ws="websockets-sansio", lifespan="off", log_config=None)
    config.load()
    # its own loop, never used: asyncio.get_event_loop() (the protocol's default) raises
    # in a thread whose loop was set and closed, e.g. after asyncio.run()
    loop = asyncio.new_event_loop()
    try:
        return direct._SANSIO(config, ServerState(), {}, _loop=loop)
    finally:
        loop.close()


async def _no_app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    return None


def _frame() -> bool:
    return direct.text_frame("x") == b"\x81\x01x"


def _queue_internals() -> bool:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    return (_has(queue, "_getters", "_putters", "_finished", "_init", "_get", "_put")
            and _has(queue._finished, "_waiters")  # type: ignore[attr-defined]
            and _calls(asyncio.Queue.get_nowait, "self._get()")
            and _calls(asyncio.Queue.put_nowait, "self._put("))


def _sio_packet() -> bool:
    pkt = socketio.AsyncServer().packet_class(sio_packet.EVENT, namespace="/", data=["e", 1])
    return bool(pkt.packet_type == sio_packet.EVENT and str(pkt.encode()).startswith("2"))


def _header_patterns() -> bool:
    from websockets import http11

    return (http11._token_re.pattern == slotted_ws.TOKEN.pattern
            and http11._value_re.pattern == slotted_ws.VALUE.pattern
            and isinstance(http11.MAX_NUM_HEADERS, int)
            and isinstance(http11.MAX_LINE_LENGTH, int))


def _accept_copied() -> bool:
    from websockets.server import ServerProtocol

    return (_same_source(ServerProtocol.accept, slotted_ws.ACCEPT_SHA256)
            and _has(ServerProtocol, "process_request"))


def _parser_steps() -> bool:
    from websockets.protocol import Protocol
    from websockets.server import ServerProtocol

    return (all(_calls(ServerProtocol.parse, text) for text in (
        "request = yield from Request.parse(", "self.events.append(request)",
        "yield from super().parse()"))
        and _calls(Protocol.__init__, "self.parser = self.parse()")
        and _calls(Protocol.receive_data, "next(self.parser)"))


def _uvicorn_upgrade() -> bool:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    if slotted_ws.SlottedWebSocketProtocol is None:
        return False
    upgrade = HttpToolsProtocol.handle_websocket_upgrade
    return (all(_calls(upgrade, text) for text in (
        "self.connections.discard(self)", 'output = [method, b" ", self.url, b" HTTP/1.1\\r\\n"]',
        "config=self.config", "server_state=self.server_state", "app_state=self.app_state",
        'for name, value in self.scope["headers"]:',
        "protocol.connection_made(self.transport)", "self.transport.set_protocol(protocol)",
        'protocol.data_received(b"".join(output))'))
        and _calls(direct._SANSIO.handle_events,  # type: ignore[union-attr]
                   "self.handle_connect(event)"))


P = async_pubsub_manager.AsyncPubSubManager
S = socketio.AsyncServer
HOOKS: tuple[Hook, ...] = (
    # inline fan-out (fanout.py)
    Hook("inline_fanout", "AsyncPubSubManager._thread calls _handle_emit",
         lambda: _calls(P._thread, "_handle_emit")),
    Hook("inline_fanout", "AsyncManager.get_participants / eio_sid_from_sid / rooms",
         lambda: _has(socketio.AsyncManager, "get_participants", "eio_sid_from_sid",
                      "sid_from_eio_sid") and _has(socketio.AsyncManager(), "rooms")),
    Hook("inline_fanout", "AsyncServer.packet_class encodes an EVENT", _sio_packet),
    Hook("inline_fanout", "engineio.packet.Packet(MESSAGE, text)",
         lambda: eio_packet.Packet(eio_packet.MESSAGE, "2x").encode() == "42x"),
    Hook("inline_fanout", "AsyncSocket queue / closed / closing / last_ping / send",
         lambda: _has(_socket(), "queue", "closed", "closing", "last_ping", "send")),
    Hook("inline_fanout", "AsyncServer sockets / ping_timeout",
         lambda: _has(_eio(), "sockets", "ping_timeout", "ping_interval")),
    # direct writes (direct.py, replay.send_page)
    Hook("direct_writes", "uvicorn's WebSocketsSansIOProtocol", lambda: _uvicorn() is not None),
    Hook("direct_writes", "the protocol's conn / writable / close_sent / disconnected / "
                          "transport", lambda: _has(_uvicorn(), "conn", "writable", "close_sent",
                                                    "disconnected", "transport")
         and _has(_uvicorn().conn, "extensions", "state")),
    Hook("direct_writes", "uvicorn hands the app its bound send (ASGI send.__self__)",
         lambda: _calls(direct._SANSIO.run_asgi, "self.send")),  # type: ignore[union-attr]
    # a method, not the class: a class's source is found by parsing its module (ast), which
    # CPython 3.11 can fail spuriously (python/cpython#106905); a function's is not parsed
    Hook("direct_writes", "engine.io's ASGI WebSocket keeps asgi_send",
         lambda: _calls(eio_asgi.WebSocket.__call__, "self.asgi_send = ")),
    Hook("direct_writes", "AsyncSocket._websocket_handler calls self.poll()",
         lambda: _calls(async_socket.AsyncSocket._websocket_handler, "self.poll()")),
    Hook("direct_writes", "AsyncSocket upgraded", lambda: _has(_socket(), "upgraded")),
    Hook("direct_writes", "engine.io connect handler (handlers, on)",
         lambda: isinstance(_eio().handlers, dict) and _has(_eio(), "on")),
    Hook("direct_writes", "websockets Frame(TEXT).serialize, State.OPEN", _frame),
    # lean queues (sio.LeanQueue, _slim_websocket)
    Hook("lean_queues", "asyncio.Queue _getters / _putters / _finished._waiters / _get / _put",
         _queue_internals),
    Hook("lean_queues", "asyncio.Event _waiters", lambda: _has(asyncio.Event(), "_waiters")),
    Hook("lean_queues", "AsyncSocket takes its queue from server.create_queue",
         lambda: _calls(async_socket.AsyncSocket.__init__, "create_queue")),
    Hook("lean_queues", "the protocol's queue and writable",
         lambda: _uvicorn() is None or (type(_uvicorn().queue) is asyncio.Queue
                                        and type(_uvicorn().writable) is asyncio.Event)),
    # session ids (sio.SessionIds)
    Hook("session_ids", "AsyncServer._handle_connect calls generate_id; sequence_number",
         lambda: _calls(async_server.AsyncServer._handle_connect, "generate_id")
         and isinstance(_eio().sequence_number, int)),
    # JSON packets (replay.encode)
    Hook("json_packets", "a default-namespace EVENT is '2' + JSON",
         lambda: _packet_prefix_matches(socketio.AsyncServer().packet_class)),
    # trimmed handshake environ (sio._trim_environ)
    Hook("trim_environ", "the protocol's handshake_complete; uvicorn passes self.receive",
         lambda: _uvicorn() is None or (_has(_uvicorn(), "handshake_complete") and _calls(
             direct._SANSIO.run_asgi, "self.receive"))),  # type: ignore[union-attr]
    # heartbeat on a shared wheel (heartbeat.py, sendqueue.HeraldSocket.schedule_ping)
    Hook("heartbeat_wheel", "AsyncSocket.schedule_ping on PONG; _send_ping sets last_ping "
                            "and sends a PING", lambda: _calls(
             async_socket.AsyncSocket.receive, "self.schedule_ping()") and _calls(
             async_socket.AsyncSocket._send_ping, "self.last_ping = time.time()")
         and _calls(async_socket.AsyncSocket._send_ping, "packet.Packet(packet.PING)")),
    # the websocket reader in the handler's task (sendqueue.HeraldSocket._websocket_session)
    Hook("lean_reader", "AsyncSocket._websocket_handler reads ws.wait(), receives, queues "
                        "None for the writer and closes with TRANSPORT_CLOSE", lambda: all(
             _calls(async_socket.AsyncSocket._websocket_handler, text) for text in (
                 "await ws.wait()", "self.server.max_http_buffer_size",
                 "await self.receive(pkt)", "await self.queue.put(None)",
                 "reason=self.server.reason.TRANSPORT_CLOSE", "await ws.close()"))
         and _has(_socket(), "connected", "upgraded", "poll", "receive", "close")
         and _has(eio_asgi.WebSocket, "wait", "send", "close")),
    # fewer writes (direct.DirectSocket.write_run, _upgrade_websocket)
    Hook("connect_writes", "engine.io's ASGI WebSocket accepts, then calls the handler",
         lambda: all(_calls(eio_asgi.WebSocket.__call__, text) for text in (
             "self.asgi_receive = environ['asgi.receive']", "await self.handler(self)",
             "await self.asgi_send({'type': 'websocket.accept'})"))
         and _calls(async_socket.AsyncSocket._upgrade_websocket,
                    "self._websocket_handler, self.server")),
    Hook("connect_writes", "uvicorn's accept writes the 101 through self.transport",
         lambda: _calls(direct._SANSIO.send,  # type: ignore[union-attr]
                        "self.transport.write(b\"\".join(output))")
         and _has(_uvicorn(), "handshake_complete")),
    Hook("connect_writes", "engineio.packet.Packet binary",
         lambda: eio_packet.Packet(eio_packet.MESSAGE, "x").binary is False
         and eio_packet.Packet(eio_packet.MESSAGE, b"x").binary is True),
    # engine.io's translate_request without a class per request (environ.py)
    Hook("payload_class", "engine.io's ASGI translate_request is the one copied (source "
                          "digest)",
         lambda: _same_source(eio_asgi.translate_request, eio_environ.SOURCE_SHA256)),
    Hook("payload_class", "AsyncServer.handle_request calls self._async['translate_request']",
         lambda: _calls(async_server.AsyncServer.handle_request,
                        "translate_request = self._async['translate_request']")
         and isinstance(_eio()._async, dict)),
    # the upgrade without a second parse (app/core/slotted_ws.py, httphead.py)
    Hook("lean_upgrade", "websockets.http11 _token_re / _value_re / MAX_NUM_HEADERS / "
                         "MAX_LINE_LENGTH", _header_patterns),
    Hook("lean_upgrade", "ServerProtocol.parse reads a Request, then Protocol.parse; "
                         "Protocol.__init__ starts self.parse()", _parser_steps),
    Hook("lean_upgrade", "websockets' ServerProtocol.accept is the one copied (source digest)",
         _accept_copied),
    Hook("lean_upgrade", "uvicorn's handle_websocket_upgrade feeds the head as HTTP/1.1 bytes; "
                         "handle_events hands a Request to handle_connect", _uvicorn_upgrade),
    # protections: overrides of private methods (sio.HeraldServer, manager)
    Hook("connect_timeout", "AsyncServer._handle_eio_connect / _handle_connect / "
                            "_handle_eio_disconnect", lambda: _has(
             S, "_handle_eio_connect", "_handle_connect", "_handle_eio_disconnect")),
    Hook("binary_bound", "AsyncServer._handle_eio_message / _binary_packet",
         lambda: _has(S, "_handle_eio_message") and _has(S(), "_binary_packet")),
    Hook("close_transport", "AsyncSocket.close(wait, abort, reason); reason.TRANSPORT_CLOSE",
         lambda: {"wait", "abort", "reason"} <= set(
             inspect.signature(async_socket.AsyncSocket.close).parameters)
         and _has(_eio().reason, "TRANSPORT_CLOSE")),
    Hook("subscription_retry", "AsyncRedisManager._listen calls _redis_listen_with_retries",
         lambda: _calls(socketio.AsyncRedisManager._listen, "_redis_listen_with_retries")
         and _has(socketio.AsyncRedisManager, "_redis_connect")),
)


def _ok(hook: Hook) -> bool:
    try:
        return bool(hook.check())
    except Exception:  # an attribute, a signature or a source that is not there
        return False


@functools.cache
def check() -> dict[str, tuple[str, ...]]:
    """Every fast path and protection -> the hooks missing on the installed versions."""
    missing: dict[str, list[str]] = {path: [] for path in [*FASTPATHS, *PROTECTIONS]}
    for hook in HOOKS:
        if not _ok(hook):
            missing[hook.path].append(hook.what)
    if missing["inline_fanout"]:  # direct writes ride on the inline fan-out
        missing["direct_writes"].append("inline_fanout")
    if missing["direct_writes"]:  # and fewer writes on direct writes
        missing["connect_writes"].append("direct_writes")
    return {path: tuple(items) for path, items in missing.items()}


def apply(gateway: Any) -> dict[str, bool]:
    """Switch off each fast path with a missing hook on `gateway`; one log line for each.

    Returns every fast path -> on (the `herald_fastpath_enabled` metric)."""
    missing = check()
    for path, what in missing.items():
        if not what:
            continue
        if path in FASTPATHS:
            log.warning("fast path off: %s (missing: %s); using %s", path, "; ".join(what),
                        FASTPATHS[path])
        else:
            log.error("protection inactive: %s (missing: %s)", path, "; ".join(what))
    if missing["inline_fanout"]:
        gateway.manager.fast_fanout = False
    if missing["direct_writes"]:
        direct.switch_off()
    if missing["connect_writes"] or missing["direct_writes"]:
        direct.connect_writes_off()
    if missing["lean_queues"]:
        sio_module.LEAN = False
        gateway.sio.eio.__dict__.pop("create_queue", None)  # engine.io's own again
    if missing["heartbeat_wheel"]:
        sendqueue.HEARTBEAT_WHEEL = False
    if missing["lean_reader"]:
        sendqueue.LEAN_READER = False
    if missing["session_ids"]:
        gateway.sio.eio.__dict__.pop("generate_id", None)
    if missing["payload_class"]:
        eio_environ.uninstall(gateway.sio.eio)
    if missing["lean_upgrade"]:
        slotted_ws.LEAN_UPGRADE = False
    on = {path: not missing[path] for path in FASTPATHS}
    on["connect_writes"] = on["connect_writes"] and on["direct_writes"]
    if gateway.manager.fast_fanout is False:  # HERALD_FAST_FANOUT=0: both off by choice
        on["inline_fanout"] = on["direct_writes"] = on["connect_writes"] = False
    return on


__all__ = ["FASTPATHS", "HOOKS", "PROTECTIONS", "apply", "check"]
