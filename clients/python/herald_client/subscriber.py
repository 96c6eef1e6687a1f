"""The subscriber: a Socket.IO connection that never loses an event, as an async iterator.

- `auth` is built fresh on every (re)connect: a token from `get_token` (sync or async) and
  the current position of every stream followed, so the server restores those rooms and
  replays what was missed.
- Positions of every stream heard are kept in a PositionStore; `connected.positions` and
  join acks seed only streams not yet tracked or not recovered (never jumping past events
  the server is about to replay).
- Events are de-duplicated by (stream, offset); an offset that skips ahead is a gap, filled
  over the HTTP history before the event is delivered; a stream the server cannot recover
  (recovered false, 410, another epoch) calls `on_reset(stream, head)`.
- python-socketio reconnects after a lost transport; a server-side disconnect is final for
  it, so the subscriber reconnects itself then (and on a first connect that fails).

Positions are saved when the application asks for the next event (the previous one is then
handled): a process that dies mid-event gets it again, never loses it.

Per-type callbacks (`on_notification`, `on_project_update`, …, or `on(type, handler)`) are
called with (payload, meta) as each event is handed out, beside the async iterator; an
application that only uses callbacks runs `await sub.run()`. `sub.inbox` is the user's
inbox (herald_client.inbox), kept current by the same events.

Chat messages go through an offline send queue (herald_client.outbox): saved in an
OutboxStore first, sent in order whenever connected, also after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

import socketio

from .errors import (
    HeraldError,
    Unavailable,
    error_from_ack,
)
from .history import History
from .inbox import Handler, Handlers, Inbox
from .outbox import Outbox, PendingHandler
from .outbox_store import MemoryOutbox, OutboxStore, QueuedMessage
from .pipeline import Pipeline, ResetHandler
from .retry import Backoff
from .storage import MemoryStore, PositionStore
from .types import Event, Meta, Position, TokenSource, resolve

log = logging.getLogger("herald_client")
FATAL = {"token_missing", "token_invalid", "forbidden"}
_CLOSED = object()


def _refusal(data: Any) -> tuple[str | None, str]:
    """(code, message) of a connect_error's data, code None for transport failures."""
    if isinstance(data, dict):
        inner = data.get("data")
        code = (inner if isinstance(inner, dict) else data).get("code")
        return (code if isinstance(code, str) else None), str(data.get("message", ""))
    return None, str(data)


class Subscriber:
    """Follow Herald's streams for one user: `async with Subscriber(...) as sub: async for e
    in sub: ...`."""

    def __init__(self, url: str, *, get_token: TokenSource,
                 storage: PositionStore | None = None,
                 on_reset: ResetHandler | None = None,
                 on_connection_change: Callable[[bool], Any] | None = None,
                 history: History | None = None,
                 reconnect: Backoff | None = None, connect_timeout: float = 10.0,
                 call_timeout: float = 30.0, outbox: OutboxStore | None = None,
                 on_pending_change: PendingHandler | None = None) -> None:
        self.url = url.rstrip("/")
        self._get_token = get_token
        self.storage = storage or MemoryStore()
        self._on_change = on_connection_change
        self._history = history or History(self.url, self._http_token)
        self._ready = asyncio.Event()
        self._lost = asyncio.Event()  # set while disconnected: ends a send waiting for its ack
        self._pipe = Pipeline(storage=self.storage, history=self._history, on_reset=on_reset,
                              connected=self._on_connected)
        self.tracker = self._pipe.tracker
        self._reconnect = reconnect or Backoff(attempts=0, base=0.5, cap=5.0)
        self._connect_timeout, self._call_timeout = connect_timeout, call_timeout
        self._token: str | None = None
        self._last: Meta | None = None
        self._fatal: HeraldError | None = None
        self._expired_in_row = 0
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outbox = Outbox(outbox or MemoryOutbox(), emit=self._emit_message,
                              online=self._ready, retry=self._reconnect,
                              on_change=on_pending_change)
        self._handlers = Handlers()
        self.inbox = Inbox(call=self.call, get=self._history.get)
        self._sio = socketio.AsyncClient(
            reconnection=True, reconnection_attempts=0, reconnection_delay=self._reconnect.base,
            reconnection_delay_max=self._reconnect.cap, randomization_factor=0.5,
            handle_sigint=False, logger=False, engineio_logger=False)
        self._sio.on("*", self._on_any)
        self._sio.on("connect", self._on_connect)
        self._sio.on("disconnect", self._on_disconnect)
        self._sio.on("connect_error", self._on_connect_error)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (retrying until it works); raises AuthError/Forbidden if refused for good."""
        self._spawn(self._pipe.run())
        self._outbox.start()
        try:
            await self._connect_loop()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Save the last position handed out, disconnect, stop; the iterator then ends."""
        if self._closing:
            return
        self._closing = True
        self._commit_last()
        await self._outbox.close()
        with contextlib.suppress(Exception):
            await self._sio.shutdown()
        tasks = [*self._tasks, *self._pipe.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._history.aclose()
        self._pipe.out.put_nowait(_CLOSED)

    async def __aenter__(self) -> Subscriber:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Event:
        self._commit_last()  # the application asks for more: the previous one is handled
        item = await self._pipe.out.get()
        if item is _CLOSED:
            self._pipe.out.put_nowait(_CLOSED)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, Event)
        self._last = item.meta
        await self.inbox.apply(item)
        await self._handlers.dispatch(item)
        return item

    async def run(self) -> None:
        """Hand every event to the callbacks until closed (for applications that do not
        iterate themselves); raises what the iterator raises (a refusal)."""
        async for _event in self:
            pass

    # -- callbacks per event type ----------------------------------------------------------
    def on(self, type_: str, handler: Handler) -> Callable[[], None]:
        """Call `handler(payload, meta)` (sync or async; meta None for `user-typing`) for
        every event of `type_` as it is handed out; returns `off()`."""
        return self._handlers.add(type_, handler)

    def on_notification(self, handler: Handler) -> Callable[[], None]:
        return self.on("notification", handler)

    def on_project_update(self, handler: Handler) -> Callable[[], None]:
        return self.on("project-updated", handler)

    def on_ticket_update(self, handler: Handler) -> Callable[[], None]:
        return self.on("ticket-updated", handler)

    def on_new_message(self, handler: Handler) -> Callable[[], None]:
        return self.on("new-message", handler)

    def on_document_added(self, handler: Handler) -> Callable[[], None]:
        return self.on("document-added", handler)

    def on_intervention_update(self, handler: Handler) -> Callable[[], None]:
        return self.on("intervention-updated", handler)

    def on_quote_update(self, handler: Handler) -> Callable[[], None]:
        return self.on("quote-updated", handler)

    def on_typing(self, handler: Handler) -> Callable[[], None]:
        return self.on("user-typing", handler)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    @property
    def positions(self) -> dict[str, Position]:
        """The position of every stream followed (as handed to the application)."""
        return dict(self.tracker.seen)

    # -- rooms and calls -------------------------------------------------------------------
    def track(self, stream: str, position: Position) -> None:
        """Follow `stream` from `position` (after that offset): its room is restored and its
        events replayed on the next (re)connect. Call before start() for a known stream."""
        self.tracker.follow(stream, position)

    async def join_project(self, project_id: int) -> Position:
        return await self._join("join-project", "projectId", project_id, f"project-{project_id}")

    async def join_ticket(self, ticket_id: int) -> Position:
        return await self._join("join-ticket", "ticketId", ticket_id, f"ticket-{ticket_id}")

    async def leave_project(self, project_id: int) -> None:
        self._pipe.forget(f"project-{project_id}")
        await self.call("leave-project", project_id)

    async def leave_ticket(self, ticket_id: int) -> None:
        self._pipe.forget(f"ticket-{ticket_id}")
        await self.call("leave-ticket", ticket_id)

    async def send_message(self, ticket_id: int, text: str,
                           client_message_id: str | None = None) -> dict[str, Any]:
        """Post a chat message through the offline queue: saved in the outbox store at once,
        sent in order whenever connected; returns the server's ack once stored (a repeated
        client_message_id stores nothing new). Raises the typed error of a refusal
        (`Invalid`, `Forbidden`, `NotFound`, `Conflict`, ...), which takes it off the queue,
        or `Unavailable` (code `closed`) if the subscriber closes first (it stays queued)."""
        return await self._outbox.send(QueuedMessage.new(ticket_id, text, client_message_id))

    def pending_messages(self) -> list[QueuedMessage]:
        """The chat messages waiting to be stored by the server, oldest first."""
        return self._outbox.pending()

    async def start_typing(self, ticket_id: int, user_name: str) -> None:
        await self.call("typing-start", {"ticketId": ticket_id, "userName": user_name})

    async def stop_typing(self, ticket_id: int) -> None:
        await self.call("typing-stop", {"ticketId": ticket_id})

    async def call(self, event: str, data: Any = None) -> dict[str, Any]:
        """Emit with an ack once connected; returns the ack or raises its typed error."""
        await self._wait_ready()
        ack = await self._emit(event, data)
        if not isinstance(ack, dict) or ack.get("ok") is not True:
            raise error_from_ack(ack.get("error") if isinstance(ack, dict) else ack)
        return ack

    async def _emit(self, event: str, data: Any) -> Any:
        """One emit with an ack; the raw ack, or Unavailable when none came."""
        try:
            return await self._sio.call(event, data, timeout=self._call_timeout)
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError) as exc:
            raise Unavailable(f"{event}: no answer ({type(exc).__name__})",
                              code="unavailable") from None

    async def _emit_message(self, entry: QueuedMessage) -> Any:
        """The outbox's sender: one `send-message` for a queued entry. A lost connection ends
        the wait for its ack at once (the entry is sent again after the reconnect)."""
        call = asyncio.ensure_future(self._emit("send-message", {
            "ticketId": entry.ticket_id, "message": entry.text,
            "clientMessageId": entry.client_message_id}))
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({call, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not call.done():
                call.cancel()
        if call.cancelled():
            raise Unavailable("send-message: the connection was lost before the ack",
                              code="unavailable")
        return call.result()

    async def _join(self, event: str, key: str, ident: int, stream: str) -> Position:
        await self._wait_ready()
        have = self.tracker.seen.get(stream)
        self.tracker.left.discard(stream)
        ack = await self.call(event, {key: ident, **({"position": have.to_dict()} if have
                                                     else {})})
        head = Position(int(ack["offset"]), str(ack["epoch"]))
        recovered = bool(ack.get("recovered")) if have is not None else None
        self._pipe.put(("ack", stream, head, recovered))
        return head

    async def _wait_ready(self) -> None:
        while not self._ready.is_set():
            if self._fatal is not None:
                raise self._fatal
            if self._closing:
                raise Unavailable("the subscriber is closed", code="closed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), 0.5)

    # -- connection ------------------------------------------------------------------------
    async def _auth(self) -> dict[str, Any]:
        self._token = str(await resolve(self._get_token))
        return {"token": self._token, "positions": self.tracker.auth_positions()}

    async def _http_token(self, fresh: bool) -> str:
        if fresh or self._token is None:
            self._token = str(await resolve(self._get_token))
        return self._token

    async def _connect_loop(self) -> None:
        attempt = 0
        while not self._closing:
            if self._sio.connected:
                return
            try:
                await self._sio.connect(self.url, auth=self._auth, transports=["websocket"],
                                        wait_timeout=self._connect_timeout)
                return
            except socketio.exceptions.ConnectionError as exc:
                if self._fatal is not None:
                    raise self._fatal from None
                delay = self._reconnect.delay(min(attempt, 10))
                attempt += 1
                log.info("connect failed url=%s error=%s retry_in=%.2f", self.url, exc, delay)
                await asyncio.sleep(delay)

    async def _on_connect(self) -> None:
        self._expired_in_row = 0

    async def _on_disconnect(self, reason: Any = None) -> None:
        self._ready.clear()
        self._lost.set()
        self._notify(False)
        if reason == socketio.AsyncClient.reason.SERVER_DISCONNECT and not self._closing:
            log.info("server disconnected the socket; reconnecting")
            self._spawn(self._after_server_disconnect())

    async def _after_server_disconnect(self) -> None:
        for _ in range(100):  # python-socketio closes the transport after this handler
            if not self._sio.connected and self._sio.eio.state == "disconnected":
                break
            await asyncio.sleep(0.05)
        with contextlib.suppress(HeraldError):  # a refusal reaches the iterator already
            await self._connect_loop()

    async def _on_connect_error(self, data: Any = None) -> None:
        code, message = _refusal(data)
        if code == "token_expired":
            self._expired_in_row += 1  # the next attempt asks get_token for a fresh one
            if self._expired_in_row < 2:
                return
            message = "get_token returned an expired token"
        if code in FATAL or code == "token_expired":
            self._fail(error_from_ack({"code": code, "message": message or "refused"}))

    def _fail(self, error: HeraldError) -> None:
        if self._fatal is None:
            log.warning("connection refused code=%s", error.code)
            self._fatal = error
            self._pipe.out.put_nowait(error)
            self._outbox.abandon(error)
            self._spawn(self._sio.shutdown())

    async def _on_any(self, name: str, *args: Any) -> None:
        # No await before the put: handlers run as tasks, this keeps arrival order.
        if not self._closing:
            self._pipe.put(("event", name, args))

    def _on_connected(self) -> None:
        self._lost.clear()
        self._ready.set()
        self._notify(True)

    def _notify(self, up: bool) -> None:
        if self._on_change is not None:
            result = self._on_change(up)
            if inspect.isawaitable(result):
                self._spawn(result)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _commit_last(self) -> None:
        if self._last is not None:
            self._pipe.commit(self._last.stream, Position(self._last.offset, self._last.epoch))
            self._last = None


__all__ = ["ResetHandler", "Subscriber"]
