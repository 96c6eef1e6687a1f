"""The Socket.IO server: connect-time JWT check, rooms, replay on (re)connect, chat, typing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import socketio
from socketio.packet import EVENT
from sqlalchemy.orm import Session, sessionmaker

from app import access, portal
from app.auth import Principal, decode
from app.errors import AuthError, Gone, HeraldError, InvalidInput
from app.gateway import args
from app.gateway.manager import HeraldRedisManager
from app.models import ROLE_STREAMS
from app.outbox.replay import Head, iter_after, read_head
from app.outbox.streams import parse_stream, project_stream, ticket_stream, user_stream
from app.outbox.tables import EventRecord

log = logging.getLogger("herald.gateway")
T = TypeVar("T")
MAX_FRAME = 1_000_000
MAX_POSITIONS = 200


def ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def fail(error: HeraldError) -> dict[str, Any]:
    return {"ok": False, "error": error.to_dict()}


class Gateway:
    """Socket.IO handlers bound to a session factory and a Redis client manager."""

    def __init__(
        self, *, session_factory: sessionmaker[Session], secret: str, redis_url: str,
        channel: str = "socketio", metrics: Any = None,
    ) -> None:
        self.factory = session_factory
        self.secret = secret
        self.metrics = metrics
        self.manager = HeraldRedisManager(redis_url, channel=channel)
        self.sio = socketio.AsyncServer(
            async_mode="asgi", client_manager=self.manager, cors_allowed_origins="*",
            max_http_buffer_size=MAX_FRAME, logger=False, engineio_logger=False,
        )
        self.sockets = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.manager.on_resubscribed = self._resubscribed
        self._register()

    # -- helpers -------------------------------------------------------------------------
    async def db(self, fn: Callable[[Session], T]) -> T:
        """Run `fn(session)` in one transaction on a worker thread."""
        def run() -> T:
            with self.factory() as session, session.begin():
                return fn(session)
        return await asyncio.to_thread(run)

    async def principal(self, sid: str) -> Principal:
        session = await self.sio.get_session(sid)
        who = session.get("who")
        assert isinstance(who, Principal)
        return who

    def _register(self) -> None:
        sio = self.sio
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        for name, handler in {
            "join-project": self.join_project, "leave-project": self.leave_project,
            "join-ticket": self.join_ticket, "leave-ticket": self.leave_ticket,
            "typing-start": self.typing_start, "typing-stop": self.typing_stop,
            "send-message": self.send_message, "heartbeat": self.heartbeat,
        }.items():
            sio.on(name, self._guarded(name, handler))

    def _guarded(
        self, name: str, handler: Callable[[str, Any], Any]
    ) -> Callable[..., Any]:
        async def call(sid: str, *data: Any) -> dict[str, Any]:
            try:
                return await handler(sid, data[0] if data else None)  # type: ignore[no-any-return]
            except HeraldError as exc:
                log.info("socket call refused event=%s sid=%s code=%s", name, sid, exc.code)
                return fail(exc)
            except Exception:
                log.exception("socket call crashed event=%s sid=%s", name, sid)
                return {"ok": False, "error": {"code": "internal", "message": "internal error"}}
        return call

    # -- connection ----------------------------------------------------------------------
    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = _token_from(auth, environ)
        try:
            who = decode(token, secret=self.secret)
            if who.role == "service":
                raise AuthError("service tokens cannot connect", code="forbidden")
        except AuthError as exc:
            log.info("socket refused sid=%s code=%s", sid, exc.code)
            if self.metrics is not None:
                self.metrics.refused(exc.code)
            raise socketio.exceptions.ConnectionRefusedError(
                "Authentication error", {"code": exc.code}) from None
        positions = _positions(auth)
        await self.sio.save_session(sid, {"who": who})
        auto = [user_stream(int(who.sub)), ROLE_STREAMS[who.role]]
        heads = await self.db(lambda s: {
            name: read_head(s, name) for name in positions
            if _readable(s, who, name)
        })
        # Every room is gated before the socket enters any: nothing live reaches the socket
        # before `connected`, and nothing of a replayed stream overtakes its replay.
        rooms = list(dict.fromkeys([*auto, *heads]))
        for room in rooms:
            await self._lock(sid, room).acquire()  # a new socket's lock: free, no wait
            self.manager.open_gate(sid, room)
        for room in rooms:
            await self.sio.enter_room(sid, room)
        self.sockets += 1
        log.info("socket connected sid=%s user=%s role=%s restored=%d", sid, who.sub, who.role,
                 len(heads))
        task = asyncio.create_task(self._after_connect(sid, who, positions, heads, rooms))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_connect(
        self, sid: str, who: Principal, positions: dict[str, args.Position],
        heads: dict[str, Head], rooms: list[str],
    ) -> None:
        """Once the CONNECT packet is out: `connected`, then each stream's replay, in order."""
        pending = list(rooms)
        try:
            if not await self._until_connected(sid):
                return
            recovered = {name: name in heads and heads[name].can_recover(pos.offset, pos.epoch)
                         for name, pos in positions.items()}
            await self.sio.emit("connected", {"userId": who.user_id, "email": who.email,
                                              "role": who.role, "recovered": recovered},
                                to=sid, ignore_queue=True)
            for room in rooms:
                head = heads.get(room)
                if head is None:  # an automatic room without a position: only what is live
                    await self._flush(sid, room, 0)
                else:
                    pos = positions[room]
                    await self._replay(sid, room, pos.offset if recovered[room] else head.offset,
                                       head)
                self._release(sid, room)
                pending.remove(room)
        except Exception as exc:
            # Some events may be missing for this socket: drop it, so that its client
            # reconnects with its positions and recovers (or learns it cannot).
            log.error("replay on connect failed sid=%s error=%s", sid, type(exc).__name__)
            self.manager.close_all(sid)
            await self._drop_socket(sid)
        finally:
            for room in pending:
                self.manager.close_gate(sid, room)
                self._release(sid, room)

    async def _until_connected(self, sid: str, timeout: float = 30.0) -> bool:
        """Wait for the CONNECT packet (sent right after the connect handler); False if gone."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.manager.is_connected(sid, "/"):
            gone = not self.manager.is_pre_connected(sid, "/")
            if gone or asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.manager.close_all(sid)
        for key in [k for k in self._locks if k[0] == sid]:
            self._locks.pop(key, None)
        self.sockets = max(0, self.sockets - 1)
        log.info("socket disconnected sid=%s reason=%s", sid, reason)

    async def _drop_socket(self, sid: str) -> None:
        try:
            await self.sio.disconnect(sid, ignore_queue=True)
        except Exception as exc:  # already gone
            log.info("socket drop failed sid=%s error=%s", sid, type(exc).__name__)

    async def _resubscribed(self) -> None:
        """Live events were lost while Redis was away: every socket here reconnects and recovers."""
        sids = [sid for sid, _eio in self.manager.get_participants("/", None)]
        log.warning("dropping sockets after a lost subscription sockets=%d", len(sids))
        for sid in sids:
            await self._drop_socket(sid)

    # -- replay --------------------------------------------------------------------------
    def _lock(self, sid: str, stream: str) -> asyncio.Lock:
        """One replay at a time per (socket, stream): a second join waits for the first."""
        return self._locks.setdefault((sid, stream), asyncio.Lock())

    def _release(self, sid: str, stream: str) -> None:
        lock = self._locks.get((sid, stream))
        if lock is not None and lock.locked():
            lock.release()

    async def _replay(self, sid: str, stream: str, after: int, head: Head) -> int:
        """Send events after `after`, then the live ones held back meanwhile; close the gate.

        The gate must already be open and the socket in the room. Returns the last offset
        sent. Raises Gone if events in that range vanished (pruned meanwhile).
        """
        last = after
        sent = 0
        try:
            for _ in range(2):  # the stored history, then whatever committed while sending it
                batches = iter_after(self.factory, stream, last, head.epoch)
                while self.manager.is_connected(sid, "/"):
                    batch = await asyncio.to_thread(next, batches, None)
                    if batch is None:
                        break
                    for event in batch:
                        await self._send(sid, event.type, [event.payload, event.meta])
                        last = event.offset
                        sent += 1
            if last < head.offset and self.manager.is_connected(sid, "/"):
                raise Gone(f"events of {stream} after {last} were pruned during replay")
        except BaseException:
            self.manager.close_gate(sid, stream)
            raise
        last = await self._flush(sid, stream, last)
        if sent and self.metrics is not None:
            self.metrics.replayed(sent)
        if sent:
            log.info("replayed sid=%s stream=%s after=%d events=%d", sid, stream, after, sent)
        return last

    async def _flush(self, sid: str, stream: str, last: int) -> int:
        """Send the live events held back for (sid, stream) after `last`; close the gate."""
        try:
            while True:
                buffered = self.manager.take_buffer(sid, stream)
                if not buffered:
                    break
                for offset, name, data in buffered:
                    if offset > last:
                        await self._send(sid, name, data)
                        last = offset
        finally:
            # No await between the last empty take_buffer and this: nothing slips through.
            self.manager.close_gate(sid, stream, floor=last)
        return last

    async def _send(self, sid: str, event: str, data: list[Any]) -> None:
        """One event to one socket: the packet `sio.emit(event, data, to=sid)` sends, built
        by python-socketio's Packet, but without emit's room lookup, binary scan and task
        per packet (a replay sends thousands). Event data is JSON: never binary."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return
        pkt = self.sio.packet_class(EVENT, namespace="/", data=[event, *data], binary=False)
        await self.sio.eio.send(eio_sid, pkt.encode())

    async def _join(self, sid: str, stream: str, check: Callable[[Session], Any],
                    position: args.Position | None) -> dict[str, Any]:
        def authorise(session: Session) -> Head:
            check(session)
            return read_head(session, stream)
        async with self._lock(sid, stream):
            head = await self.db(authorise)
            recovered = position is not None and head.can_recover(position.offset,
                                                                   position.epoch)
            self.manager.open_gate(sid, stream)
            await self.sio.enter_room(sid, stream)
            after = position.offset if (position is not None and recovered) else head.offset
            try:
                last = await self._replay(sid, stream, after, head)
            except Exception:
                # The client got part of the history at most: out of the room, so that it
                # never sees a gap; it may join again from its last offset.
                await self.sio.leave_room(sid, stream)
                raise
            finally:
                if not self.manager.is_connected(sid, "/"):
                    self._locks.pop((sid, stream), None)
        log.info("joined sid=%s stream=%s recovered=%s", sid, stream, recovered)
        return ok(stream=stream, offset=max(last, head.offset), epoch=head.epoch,
                  recovered=recovered)

    # -- handlers ------------------------------------------------------------------------
    async def join_project(self, sid: str, data: Any) -> dict[str, Any]:
        project_id, position = args.id_and_position(data, "projectId")
        who = await self.principal(sid)
        return await self._join(
            sid, project_stream(project_id),
            lambda s: access.require_project_reader(s, who, project_id), position)

    async def join_ticket(self, sid: str, data: Any) -> dict[str, Any]:
        ticket_id, position = args.id_and_position(data, "ticketId")
        who = await self.principal(sid)
        return await self._join(
            sid, ticket_stream(ticket_id),
            lambda s: access.require_ticket_reader(s, who, ticket_id), position)

    async def leave_project(self, sid: str, data: Any) -> dict[str, Any]:
        stream = project_stream(args.id_only(data, "projectId"))
        await self.sio.leave_room(sid, stream)
        return ok(stream=stream)

    async def leave_ticket(self, sid: str, data: Any) -> dict[str, Any]:
        stream = ticket_stream(args.id_only(data, "ticketId"))
        await self.sio.leave_room(sid, stream)
        return ok(stream=stream)

    async def _typing(self, sid: str, data: Any, typing: bool) -> dict[str, Any]:
        body = args.as_object(data)
        ticket_id = args.as_id(body.get("ticketId"), "ticketId")
        name = body.get("userName", "")
        if typing:
            name = args.as_text(name, "userName", min_len=1, max_len=200)
        elif not isinstance(name, str) or len(name) > 200:
            raise InvalidInput("userName must be a string", code="invalid_argument")
        who = await self.principal(sid)
        stream = ticket_stream(ticket_id)
        if stream not in self.sio.rooms(sid):
            await self.db(lambda s: access.require_ticket_reader(s, who, ticket_id))
        await self.sio.emit("user-typing", {"ticketId": ticket_id, "userId": who.user_id,
                                            "userName": name, "isTyping": typing},
                            room=stream, skip_sid=sid)
        return ok()

    async def typing_start(self, sid: str, data: Any) -> dict[str, Any]:
        return await self._typing(sid, data, True)

    async def typing_stop(self, sid: str, data: Any) -> dict[str, Any]:
        return await self._typing(sid, data, False)

    async def send_message(self, sid: str, data: Any) -> dict[str, Any]:
        body = args.as_object(data)
        ticket_id = args.as_id(body.get("ticketId"), "ticketId")
        text = args.as_text(body.get("message"), "message", min_len=1,
                            max_len=portal.MAX_MESSAGE)
        cmid = body.get("clientMessageId")
        if cmid is not None:
            cmid = args.as_text(cmid, "clientMessageId", min_len=1, max_len=100)
        who = await self.principal(sid)
        message_id, created = await asyncio.to_thread(
            portal.post_message, self.factory, who, ticket_id, text, cmid)
        return ok(messageId=message_id, duplicate=not created)

    async def heartbeat(self, sid: str, data: Any) -> dict[str, Any]:
        return ok(serverTime=portal.iso(datetime.now(UTC)))


def _readable(session: Session, who: Principal, name: str) -> bool:
    try:
        return access.may_read_stream(session, who, name)
    except HeraldError:
        return False


def _token_from(auth: Any, environ: dict[str, Any]) -> Any:
    if isinstance(auth, dict) and "token" in auth:
        return auth["token"]
    header = environ.get("HTTP_AUTHORIZATION")
    if isinstance(header, str) and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


UNRECOVERABLE = args.Position(-1, None)  # a malformed position: joined, `recovered: false`


def _positions(auth: Any) -> dict[str, args.Position]:
    """`positions` by stream name; names of no known form are ignored."""
    raw = auth.get("positions") if isinstance(auth, dict) else None
    if not isinstance(raw, dict):
        return {}
    out: dict[str, args.Position] = {}
    for name, value in list(raw.items())[:MAX_POSITIONS]:
        try:
            parse_stream(name)
        except HeraldError:
            continue
        try:
            out[name] = args.as_position(value) or UNRECOVERABLE
        except HeraldError:
            out[name] = UNRECOVERABLE
    return out


__all__ = ["EventRecord", "Gateway"]
