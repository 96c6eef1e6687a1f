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
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any

import socketio

from herald_client.errors import (
    AuthError,
    Forbidden,
    Gone,
    HeraldError,
    NotFound,
    Unavailable,
    error_from_ack,
)
from herald_client.history import PAGE, History
from herald_client.retry import Backoff
from herald_client.storage import MemoryStore, PositionStore
from herald_client.tracker import Tracker, Verdict
from herald_client.types import Event, Meta, Position, TokenSource, resolve

log = logging.getLogger("herald_client")
ResetHandler = Callable[[str, Position], Any]
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
                 call_timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._get_token = get_token
        self.storage = storage or MemoryStore()
        self._stored = self.storage.load()
        self.tracker = Tracker(self._stored)
        self._on_reset = on_reset
        self._on_change = on_connection_change
        self._history = history or History(self.url, self._http_token)
        self._reconnect = reconnect or Backoff(attempts=0, base=0.5, cap=5.0)
        self._connect_timeout, self._call_timeout = connect_timeout, call_timeout
        self._inbound: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._out: asyncio.Queue[Any] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._token: str | None = None
        self._last: Meta | None = None
        self._fatal: HeraldError | None = None
        self._expired_in_row = 0
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
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
        self._spawn(self._process())
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
        with contextlib.suppress(Exception):
            await self._sio.shutdown()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._history.aclose()
        self._out.put_nowait(_CLOSED)

    async def __aenter__(self) -> Subscriber:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Event:
        self._commit_last()  # the application asks for more: the previous one is handled
        item = await self._out.get()
        if item is _CLOSED:
            self._out.put_nowait(_CLOSED)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, Event)
        self._last = item.meta
        return item

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
        self._forget(f"project-{project_id}")
        await self.call("leave-project", project_id)

    async def leave_ticket(self, ticket_id: int) -> None:
        self._forget(f"ticket-{ticket_id}")
        await self.call("leave-ticket", ticket_id)

    async def send_message(self, ticket_id: int, text: str,
                           client_message_id: str | None = None) -> dict[str, Any]:
        """Post a chat message; a repeated client_message_id stores nothing new."""
        return await self.call("send-message", {
            "ticketId": ticket_id, "message": text,
            "clientMessageId": client_message_id or str(uuid.uuid4())})

    async def start_typing(self, ticket_id: int, user_name: str) -> None:
        await self.call("typing-start", {"ticketId": ticket_id, "userName": user_name})

    async def stop_typing(self, ticket_id: int) -> None:
        await self.call("typing-stop", {"ticketId": ticket_id})

    async def call(self, event: str, data: Any = None) -> dict[str, Any]:
        """Emit with an ack once connected; returns the ack or raises its typed error."""
        await self._wait_ready()
        try:
            ack = await self._sio.call(event, data, timeout=self._call_timeout)
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError) as exc:
            raise Unavailable(f"{event}: no answer ({type(exc).__name__})",
                              code="unavailable") from None
        if not isinstance(ack, dict) or ack.get("ok") is not True:
            raise error_from_ack(ack.get("error") if isinstance(ack, dict) else ack)
        return ack

    async def _join(self, event: str, key: str, ident: int, stream: str) -> Position:
        await self._wait_ready()
        have = self.tracker.seen.get(stream)
        self.tracker.left.discard(stream)
        ack = await self.call(event, {key: ident, **({"position": have.to_dict()} if have
                                                     else {})})
        head = Position(int(ack["offset"]), str(ack["epoch"]))
        recovered = bool(ack.get("recovered")) if have is not None else None
        self._inbound.put_nowait(("ack", stream, head, recovered))
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
            self._out.put_nowait(error)
            self._spawn(self._sio.shutdown())

    async def _on_any(self, name: str, *args: Any) -> None:
        # No await before the put: handlers run as tasks, this keeps arrival order.
        if not self._closing:
            self._inbound.put_nowait(("event", name, args))

    def _notify(self, up: bool) -> None:
        if self._on_change is not None:
            result = self._on_change(up)
            if inspect.isawaitable(result):
                self._spawn(result)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the ordered pipeline --------------------------------------------------------------
    async def _process(self) -> None:
        while True:
            item = await self._inbound.get()
            try:
                if item[0] == "event":
                    await self._on_event(item[1], item[2])
                elif item[0] == "ack":
                    await self._seed(item[1], item[2], item[3])
                elif item[0] == "catchup" and not await self._catch_up(item[1], item[2]):
                    self._later(item, delay=2.0)  # still failing: again (a reconnect also heals)
            except Exception:
                log.exception("event handling failed item=%s", item[0])

    async def _on_event(self, name: str, args: tuple[Any, ...]) -> None:
        if name == "connected":
            await self._on_connected(args[0] if args and isinstance(args[0], dict) else {})
            return
        payload = args[0] if args else None
        meta = Meta.parse(args[1]) if len(args) > 1 else None
        if meta is None:
            self._out.put_nowait(Event(name, payload, None))  # ephemeral (typing)
            return
        event = Event(name, payload, meta)
        verdict = self.tracker.classify(meta)
        if verdict is Verdict.GAP:
            log.info("gap stream=%s have=%d got=%d", meta.stream,
                     self.tracker.seen[meta.stream].offset, meta.offset)
            if not await self._catch_up(meta.stream, meta.offset - 1):
                self._later(("catchup", meta.stream, meta.offset))
                return
        elif verdict is Verdict.RESET:
            await self._reset(meta.stream, None, Position(meta.offset - 1, meta.epoch))
        if self.tracker.classify(meta) is Verdict.DELIVER:
            self._deliver(event)

    async def _on_connected(self, data: dict[str, Any]) -> None:
        positions = data.get("positions") if isinstance(data.get("positions"), dict) else {}
        recovered = data.get("recovered") if isinstance(data.get("recovered"), dict) else {}
        assert isinstance(positions, dict) and isinstance(recovered, dict)
        for stream, raw in positions.items():
            rec = recovered.get(stream)
            await self._seed(stream, Position.from_dict(raw), rec if isinstance(rec, bool)
                             else None)
        for stream, rec in recovered.items():
            if rec is False and stream not in positions and stream in self.tracker.seen:
                log.warning("stream not readable any more, forgotten stream=%s", stream)
                self._forget(stream)
        self._ready.set()
        self._notify(True)

    async def _seed(self, stream: str, head: Position, recovered: bool | None) -> None:
        new = stream not in self.tracker.seen
        if self.tracker.seed(stream, head, recovered):
            await self._reset(stream, head)
        elif new:
            self._commit(stream, head)

    async def _catch_up(self, stream: str, upto: int) -> bool:
        """Deliver the stream's events up to offset `upto` from the HTTP history; False if
        that failed for now (a later attempt or the next reconnect repairs it)."""
        try:
            while True:
                have = self.tracker.seen.get(stream)
                if have is None or have.offset >= upto:
                    return True
                events, head = await self._history.page(stream, have.offset,
                                                        min(PAGE, upto - have.offset))
                if have.epoch is not None and head.epoch != have.epoch:
                    await self._reset(stream, head)
                    return True
                for event in events:
                    assert event.meta is not None
                    if self.tracker.classify(event.meta) is Verdict.DELIVER:
                        self._deliver(event)
                if not events or have.offset >= head.offset:
                    return True
        except Gone:
            await self._reset(stream, None, None)
            return True
        except (Forbidden, NotFound) as exc:
            log.warning("stream not readable any more, forgotten stream=%s code=%s",
                        stream, exc.code)
            self._forget(stream)
            return True
        except HeraldError as exc:
            log.warning("gap repair failed stream=%s error=%s", stream, exc.code)
            return False

    async def _reset(self, stream: str, head: Position | None,
                     fallback: Position | None = None) -> None:
        """The stream cannot be recovered: continue from its head and tell the application."""
        if head is None:
            try:
                head = await self._history.head(stream)
            except HeraldError:
                if fallback is None:
                    raise
                head = fallback
        self.tracker.reset(stream, head)
        self._commit(stream, head, force=True)
        log.warning("stream reset stream=%s offset=%d epoch=%s", stream, head.offset, head.epoch)
        if self._on_reset is not None:
            await resolve(self._on_reset, stream, head)

    def _later(self, item: tuple[Any, ...], delay: float = 1.0) -> None:
        async def put() -> None:
            await asyncio.sleep(delay)
            self._inbound.put_nowait(item)
        self._spawn(put())

    def _deliver(self, event: Event) -> None:
        assert event.meta is not None
        self.tracker.advance(event.meta)
        self._out.put_nowait(event)

    # -- storage ---------------------------------------------------------------------------
    def _commit_last(self) -> None:
        if self._last is not None:
            self._commit(self._last.stream, Position(self._last.offset, self._last.epoch))
            self._last = None

    def _commit(self, stream: str, pos: Position, force: bool = False) -> None:
        old = self._stored.get(stream)
        if not force and old is not None and stream in self.tracker.seen:
            if old.epoch is not None and pos.epoch is not None and old.epoch != pos.epoch:
                return  # a reset came in between: that head stands
            if pos.offset <= old.offset and (old.epoch is not None or pos.epoch is None):
                return
        if not force and stream not in self.tracker.seen:
            return  # left meanwhile
        self._stored[stream] = pos
        self._save()

    def _forget(self, stream: str) -> None:
        self.tracker.leave(stream)
        if self._stored.pop(stream, None) is not None:
            self._save()

    def _save(self) -> None:
        try:
            self.storage.save(self._stored)
        except Exception:
            log.exception("saving positions failed")


__all__ = ["AuthError", "Subscriber"]
