"""The Socket.IO server: connect-time JWT check, rooms, replay on (re)connect, chat, typing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import socketio
from sqlalchemy.orm import Session, sessionmaker

from app.core import names
from app.core.db import UNAVAILABLE, iso_utc, utcnow
from app.core.errors import AuthError, HeraldError, RateLimited
from app.core.ratelimit import RateLimits
from app.gateway import args, inbox
from app.gateway.bounds import SocketBounds
from app.gateway.catchup import CatchUp
from app.gateway.connects import ConnectReader
from app.gateway.gcpolicy import SocketGC
from app.gateway.identity import Identities
from app.gateway.manager import HeraldRedisManager
from app.gateway.node_metrics import NodeMetrics, NodeSnapshot, node_snapshot
from app.gateway.presence import Presence
from app.gateway.replay import NotRead, Replayer
from app.gateway.roster import Member, Roster
from app.gateway.sio import HeraldServer
from app.gateway.turns import Turns
from app.outbox.replay import Head, read_head
from app.outbox.streams import (
    ROLE_STREAMS,
    parse_stream,
    project_stream,
    ticket_stream,
    user_stream,
)
from app.outbox.tables import Stream
from app.portal import access, projects
from app.portal.auth import Principal, decode_expiring
from app.portal.models import Project, Ticket, User

log = logging.getLogger("herald.gateway")
T = TypeVar("T")
MAX_FRAME = 1_000_000
CONNECTS_PER_USER_AT_ONCE = 2


def ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def fail(error: HeraldError) -> dict[str, Any]:
    return {"ok": False, "error": error.to_dict()}


class Gateway:
    """Socket.IO handlers bound to a session factory and a Redis client manager."""

    def __init__(
        self, *, session_factory: sessionmaker[Session], secret: str, redis_url: str,
        channel: str = "socketio", metrics: NodeMetrics | None = None,
        cors_origins: list[str] | str | None = "*", connect_timeout: float = 10.0,
        limits: RateLimits | None = None, max_connections: int = 50, fast_fanout: bool = True,
        presence_ttl: float = 30.0,
        bounds: SocketBounds | None = None,
    ) -> None:
        bounds = bounds or SocketBounds()
        self.factory = session_factory
        self.secret = secret
        self.metrics = metrics or NodeMetrics()
        self.limits = limits
        self.max_connections = max_connections
        # One socket's gates hold at most what its send queue may (app/gateway/ordering.py).
        self.manager = HeraldRedisManager(redis_url, channel=channel,
                                          hold_bytes=bounds.queue_bytes,
                                          hold_packets=bounds.queue_packets)
        self.manager.fast_fanout = fast_fanout
        self.presence = Presence(redis_url, prefix=names.key(channel, "presence"))
        # Who is in each project/ticket room, cluster-wide (app/gateway/roster.py); one hash
        # tag for all its keys (its scripts touch several).
        self.roster = Roster(redis_url, prefix=names.key(f"{{{channel}}}", "roster"),
                             ttl=presence_ttl, emit=self._emit_presence, in_room=self._in_room)
        self.sio = HeraldServer(
            async_mode="asgi", client_manager=self.manager, cors_allowed_origins=cors_origins,
            max_http_buffer_size=MAX_FRAME, logger=False, engineio_logger=False,
            connect_timeout=connect_timeout, queue_bytes=bounds.queue_bytes,
            queue_packets=bounds.queue_packets,
            unknown_events_per_minute=bounds.unknown_events_per_minute,
        )
        # Connects of each user under way (not yet in its user room): counted in its cap.
        self._connecting: dict[int, int] = {}
        self.identities = Identities(
            session_factory, self._drop_socket, every=bounds.identity_recheck,
            alive=lambda sid: (self.manager.is_connected(sid, "/")
                               or self.manager.is_pre_connected(sid, "/")))
        self._turns = Turns(CONNECTS_PER_USER_AT_ONCE)  # one user's connects at once
        self._tasks: set[asyncio.Task[None]] = set()
        self.replayer = Replayer(sio=self.sio, manager=self.manager, factory=session_factory,
                                 metrics=self.metrics, drain_timeout=bounds.drain_timeout)
        self.catchup = CatchUp(sio=self.sio, manager=self.manager, replayer=self.replayer)
        self.reader = ConnectReader(session_factory, _readable)
        # Set at the first connect in a process that froze its start-up (app/web.py).
        self.gc_policy: SocketGC | None = None
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

    async def limit(self, kind: str, who: Principal) -> None:
        if self.limits is not None:
            await self.limits.check(kind, who.user_id)

    def _register(self) -> None:
        sio = self.sio
        sio.on("connect", self.on_connect)
        sio.on("disconnect", self.on_disconnect)
        for name, handler in {
            "join-project": self.join_project, "leave-project": self.leave_project,
            "join-ticket": self.join_ticket, "leave-ticket": self.leave_ticket,
            "typing-start": self.typing_start, "typing-stop": self.typing_stop,
            "send-message": self.send_message, "heartbeat": self.heartbeat,
            "inbox-mark": self.inbox_mark,
        }.items():
            sio.on(name, self._guarded(name, handler))
        # Any other client event (reserved names included) is answered `unknown_event` by
        # the server itself (app/gateway/events.py) and reaches no handler.

    def _guarded(
        self, name: str, handler: Callable[[str, Any], Any]
    ) -> Callable[..., Any]:
        async def call(sid: str, *data: Any) -> dict[str, Any]:
            try:
                return await handler(sid, data[0] if data else None)  # type: ignore[no-any-return]
            except HeraldError as exc:
                log.info("socket call refused event=%s sid=%s code=%s", name, sid, exc.code)
                return fail(exc)
            except UNAVAILABLE as exc:
                log.warning("socket call while the database is unavailable event=%s sid=%s "
                            "error=%s", name, sid, type(exc).__name__)
                return {"ok": False, "error": {"code": "unavailable",
                                               "message": "the database is unavailable; "
                                                          "retry later"}}
            except Exception:
                log.exception("socket call crashed event=%s sid=%s", name, sid)
                return {"ok": False, "error": {"code": "internal", "message": "internal error"}}
        return call

    # -- connection ----------------------------------------------------------------------
    def _refuse(self, sid: str, exc: HeraldError) -> socketio.exceptions.ConnectionRefusedError:
        log.info("socket refused sid=%s code=%s", sid, exc.code)
        self.metrics.refused(exc.code)
        data = {"code": exc.code}
        if isinstance(exc, RateLimited):
            data["retryAfter"] = exc.retry_after  # type: ignore[assignment]
        return socketio.exceptions.ConnectionRefusedError("Authentication error", data)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = args.token_from(auth, environ)
        try:
            who, expires = decode_expiring(token, secret=self.secret)
            if who.role == "service":
                raise AuthError("service tokens cannot connect", code="forbidden")
            user_id = who.user_id
            assert user_id is not None
            await self.limit("connect", who)
            # Open sockets and connects under way both count: parallel connects all
            # checked before any of them entered its room would otherwise pass the cap.
            connecting = self._connecting.get(user_id, 0)
            if self._open_sockets(user_id) + connecting >= self.max_connections:
                raise RateLimited(f"at most {self.max_connections} connections per user",
                                  retry_after=5)
            self._connecting[user_id] = connecting + 1
            try:
                async with self._turns.turn(user_id):
                    try:
                        await self._connect(sid, who, auth)
                    except BaseException:
                        self.manager.presence_out.forget(sid)
                        raise
                self.identities.add(sid, who, expires)
            finally:
                left = self._connecting[user_id] - 1
                if left:
                    self._connecting[user_id] = left
                else:
                    del self._connecting[user_id]
            if self.gc_policy is None and SocketGC.wanted():
                self.gc_policy = SocketGC(lambda: len(self.sio.eio.sockets))
            if self.gc_policy is not None:
                self.gc_policy.connected()
        except HeraldError as exc:
            raise self._refuse(sid, exc) from None
        except UNAVAILABLE as exc:
            # The database is away: close the transport first, which clients retry with
            # backoff (a refusal alone is final for socket.io-client).
            log.warning("socket connect while the database is unavailable sid=%s error=%s",
                        sid, type(exc).__name__)
            await self.sio.close_transport(sid)
            raise self._refuse(sid, HeraldError("database unavailable",
                                                code="unavailable")) from None
        except Exception:
            # Never leave a half-connected socket behind (the client would hang, the
            # count would leak): refuse it; the client may try again.
            log.exception("socket connect crashed sid=%s", sid)
            raise self._refuse(sid, HeraldError("unavailable", code="unavailable")) from None

    def _open_sockets(self, user_id: int) -> int:
        return sum(1 for _ in self.manager.get_participants("/", user_stream(user_id)))

    async def _connect(self, sid: str, who: Principal, auth: Any) -> None:
        positions = args.positions_from(auth)
        restorable = list(positions)[:args.MAX_POSITIONS]
        assert who.user_id is not None
        auto = [user_stream(who.user_id), ROLE_STREAMS[who.role]]

        # No presence event reaches the socket before its `connected` (its client reads
        # the lists after it): app/gateway/presenceout.py.
        self.manager.presence_out.unannounced.add(sid)
        # The auto rooms are gated before their heads are read: whatever commits after that
        # read reaches the gate, so a replay from the head needs no read of the event table.
        for room in auto:
            self.manager.open_gate(sid, room)
        try:
            # ...and this node subscribed to their channels (app/gateway/rooms.py) before.
            await self.manager.subscribed(auto)
            # Read with the other connects waiting at this moment (app/gateway/connects.py).
            # The sid recorded for revocations (app/gateway/presence.py) meanwhile: both
            # are done before the socket enters any room.
            loaded, _ = await asyncio.gather(self.reader.load(who, auto, restorable),
                                             self.presence.add(who.user_id, sid))
            auto_heads, heads = loaded.auto, loaded.restored
            await self.sio.save_session(sid, {"who": who, "name": loaded.name})
        except BaseException as exc:
            self.manager.close_all(sid)
            if isinstance(exc, Exception):  # refused: its sid recorded for nothing
                await self.presence.remove(who.user_id, sid)
            raise
        # Every room is gated before the socket enters any: nothing live reaches the socket
        # before `connected`, and nothing of a replayed stream overtakes its replay.
        rooms = list(dict.fromkeys([*auto, *heads]))
        for room in rooms:
            await self.replayer.lock(sid, room).acquire()  # a new socket's lock: free, no wait
            if room not in auto:
                self.manager.open_gate(sid, room)
        for room in rooms:
            await self.sio.enter_room(sid, room)
        for room in heads:  # restored project/ticket rooms: present there
            await self.roster.enter(sid, self._member(who, loaded.name), room, skip_sid=sid)
        log.info("socket connected sid=%s user=%s role=%s restored=%d", sid, who.sub, who.role,
                 len(heads))
        all_heads = {**auto_heads, **heads}
        recovered = {name: name in all_heads
                     and all_heads[name].can_recover(pos.offset, pos.epoch)
                     for name, pos in positions.items()}
        # The `connected` event goes right behind the CONNECT ack (one write of both): the
        # packet `sio.emit("connected", ..., to=sid)` sends. The head of every stream the
        # socket is in, so that a client can track streams it never asked for (its user and
        # role streams).
        self.sio.send_behind_connect(sid, self.replayer.encode("connected", [{
            "userId": who.user_id, "email": who.email, "role": who.role,
            "recovered": recovered,
            "positions": {room: all_heads[room].to_dict() for room in rooms}}]))
        task = asyncio.create_task(
            self._after_connect(sid, positions, all_heads, recovered, rooms, set(auto)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_connect(
        self, sid: str, positions: dict[str, args.Position], heads: dict[str, Head],
        recovered: dict[str, bool], rooms: list[str], gated_before_head: set[str],
    ) -> None:
        """Once the CONNECT packet is out: `connected` (sent behind it by the server, else
        here), then each stream's replay, in order."""
        pending = list(rooms)
        try:
            connected = await self._until_connected(sid)
            packet = self.sio.take_behind_connect(sid)
            if not connected:
                self.manager.presence_out.forget(sid)
                return
            if packet is not None:  # not sent behind the CONNECT ack
                await self.replayer.send_packet(sid, packet)
            self.manager.presence_out.announced(sid)
            for room in rooms:
                head = heads[room]
                pos = positions.get(room)
                # From the position when it can be recovered, else from the head announced
                # above: whatever committed since that head read reaches the socket too.
                after = pos.offset if pos is not None and recovered[room] else head.offset
                await self.replayer.replay(
                    sid, room, after, head,
                    read=not (after == head.offset and room in gated_before_head))
                self.replayer.release(sid, room)
                pending.remove(room)
        except Exception as exc:
            # Some events may be missing for this socket: close its transport, so that its
            # client reconnects with its positions and recovers (or learns it cannot).
            # (NotRead: closed for not reading, nothing failed.)
            log.log(logging.INFO if isinstance(exc, NotRead) else logging.ERROR,
                    "replay on connect failed sid=%s error=%s detail=%s", sid,
                    type(exc).__name__, exc)
            self.manager.close_all(sid)
            await self._drop_socket(sid)
        finally:
            for room in pending:
                self.manager.close_gate(sid, room)
                self.replayer.release(sid, room)

    async def _until_connected(self, sid: str, timeout: float = 30.0) -> bool:
        """Wait for the CONNECT packet (sent right after the connect handler); False if gone."""
        return await self.sio.until_connected(sid, timeout)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        try:
            who = (await self.sio.get_session(sid)).get("who")
        except KeyError:
            who = None
        if isinstance(who, Principal) and who.user_id is not None:
            await self.presence.remove(who.user_id, sid)
        await self.roster.gone(sid)
        self.manager.close_all(sid)
        self.replayer.forget(sid)
        self.identities.remove(sid)
        if self.gc_policy is not None:
            self.gc_policy.disconnected()
        log.info("socket disconnected sid=%s reason=%s", sid, reason)

    async def _drop_socket(self, sid: str) -> None:
        """Close the transport (never a Socket.IO disconnect, which clients take as final)."""
        await self.sio.close_transport(sid)

    async def _resubscribed(self) -> None:
        """Live events were lost while Redis was away: catch every room up from the database."""
        await self.catchup.all_rooms()

    async def _join(self, sid: str, stream: str, check: Callable[[Session], Any],
                    position: args.Position | None) -> dict[str, Any]:
        def authorise(session: Session) -> Head:
            check(session)
            return read_head(session, stream)
        unread = False  # the history's send stopped: the socket went (NotRead)
        async with self.replayer.lock(sid, stream):
            head = await self.db(authorise)
            recovered = position is not None and head.can_recover(position.offset,
                                                                   position.epoch)
            self.manager.open_gate(sid, stream)
            await self.sio.enter_room(sid, stream)
            after = position.offset if (position is not None and recovered) else head.offset
            try:
                await self.replayer.replay(sid, stream, after, head)
            except Exception as exc:
                # The client got part of the history at most: out of the room, so that it
                # never sees a gap; it may join again from its last offset.
                await self.sio.leave_room(sid, stream)
                if not isinstance(exc, NotRead):
                    raise
                unread = True
            finally:
                if not self.manager.is_connected(sid, "/"):
                    self.replayer.forget(sid, stream)
        if unread or not self.manager.is_connected(sid, "/"):
            # The replay stopped early: the history's send, the gate's flush or its read
            # through the table gives up on a socket that went, because the node closed its
            # transport for not reading or because its client hung up. Nobody gets this
            # ack; its client reconnects with its positions and recovers.
            reason = ("closed-for-not-reading" if self.sio.closed_for_not_reading(sid)
                      else "disconnected")
            log.info("join ended sid=%s stream=%s reason=%s", sid, stream, reason)
            return fail(NotRead(f"the socket was closed before it read the events of {stream}: "
                                f"reconnect"))
        log.info("joined sid=%s stream=%s recovered=%s", sid, stream, recovered)
        # The head the join started from (like `connected.positions`): every event after it
        # reaches the socket, whether replayed during the join or live afterwards.
        return ok(stream=stream, offset=head.offset, epoch=head.epoch, recovered=recovered)

    # -- handlers ------------------------------------------------------------------------
    def snapshot(self) -> NodeSnapshot:
        """This node's numbers for /metrics (read on the event loop, where rooms change)."""
        return node_snapshot(self.metrics, self.manager, self.replayer.pages.counts)

    async def revoke(self, user_id: int, rooms: list[str]) -> int:
        """Take `user_id`'s sockets out of `rooms` on every node; the sockets seen."""
        return await self.presence.revoke(self.manager, user_id, rooms)

    # -- presence (app/gateway/roster.py) -------------------------------------------------
    @staticmethod
    def _member(who: Principal, name: str) -> Member:
        assert who.user_id is not None
        return Member(who.user_id, name or who.email, who.role)

    def _in_room(self, sid: str, room: str) -> bool:
        return sid in self.manager.rooms.get("/", {}).get(room, {})

    async def _emit_presence(self, event: str, payload: dict[str, Any], room: str,
                             skip_sid: str | None) -> None:
        await self.sio.emit(event, payload, room=room, skip_sid=skip_sid)

    async def _present(self, sid: str, ack: dict[str, Any]) -> dict[str, Any]:
        """A joined socket is present in the room; the ack says who else is (one read after
        the socket entered, so the presence events that follow complete it)."""
        if not ack["ok"]:  # the join ended without the socket (`_join`)
            return ack
        session = await self.sio.get_session(sid)
        stream = ack["stream"]
        if self._in_room(sid, stream):
            await self.roster.enter(sid, self._member(session["who"], session.get("name", "")),
                                    stream, skip_sid=sid)
        return {**ack, "presence": await self.roster.members(stream)}

    async def presence_of(self, stream: str) -> list[dict[str, Any]]:
        """Who is in `stream`'s room on any node (GET /api/streams/{stream}/presence)."""
        return await self.roster.members(stream)

    async def join_project(self, sid: str, data: Any) -> dict[str, Any]:
        project_id, position = args.id_and_position(data, "projectId")
        who = await self.principal(sid)
        await self.limit("join", who)
        return await self._present(sid, await self._join(
            sid, project_stream(project_id),
            lambda s: access.require_project_reader(s, who, project_id), position))

    async def join_ticket(self, sid: str, data: Any) -> dict[str, Any]:
        ticket_id, position = args.id_and_position(data, "ticketId")
        who = await self.principal(sid)
        await self.limit("join", who)
        return await self._present(sid, await self._join(
            sid, ticket_stream(ticket_id),
            lambda s: access.require_ticket_reader(s, who, ticket_id), position))

    async def leave_project(self, sid: str, data: Any) -> dict[str, Any]:
        stream = project_stream(args.id_only(data, "projectId"))
        await self.sio.leave_room(sid, stream)
        await self.roster.leave(sid, stream)
        return ok(stream=stream)

    async def leave_ticket(self, sid: str, data: Any) -> dict[str, Any]:
        stream = ticket_stream(args.id_only(data, "ticketId"))
        await self.sio.leave_room(sid, stream)
        await self.roster.leave(sid, stream)
        return ok(stream=stream)

    async def _typing(self, sid: str, data: Any, typing: bool) -> dict[str, Any]:
        body = args.as_object(data)
        ticket_id = args.as_id(body.get("ticketId"), "ticketId")
        # The name comes from the server's record; a client's `userName` is ignored.
        session = await self.sio.get_session(sid)
        who, name = session["who"], session.get("name", "")
        await self.limit("typing", who)
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
                            max_len=projects.MAX_MESSAGE)
        cmid = body.get("clientMessageId")
        if cmid is not None:
            cmid = args.as_text(cmid, "clientMessageId", min_len=1, max_len=100)
        who = await self.principal(sid)
        await self.limit("message", who)
        message_id, created = await asyncio.to_thread(
            projects.post_message, self.factory, who, ticket_id, text, cmid)
        return ok(messageId=message_id, duplicate=not created)

    async def heartbeat(self, sid: str, data: Any) -> dict[str, Any]:
        return ok(serverTime=iso_utc(utcnow()))

    async def inbox_mark(self, sid: str, data: Any) -> dict[str, Any]:
        who = await self.principal(sid)
        await self.limit("inbox", who)
        return await inbox.inbox_mark(self.factory, who, data)


def _readable(session: Session, who: Principal, name: str) -> bool:
    """Whether `who` may restore `name` at connect: readable, and a stream that exists or
    of something that exists (an admin reads any id), so that a connect never creates a
    stream row for nothing."""
    try:
        if not access.may_read_stream(session, who, name):
            return False
        parsed = parse_stream(name)
    except HeraldError:
        return False
    model = {"project": Project, "ticket": Ticket, "user": User}.get(parsed.kind)
    return (model is None or session.get(Stream, name) is not None
            or session.get(model, parsed.id) is not None)


__all__ = ["Gateway"]
