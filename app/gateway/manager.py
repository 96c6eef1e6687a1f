"""A Redis client manager that keeps each socket's view of a stream in offset order.

When a socket catches up on a stream, live events for that stream (arriving from the
relay through Redis) must not overtake the replayed ones:

* While a (socket, stream) **gate** is open, live events for the stream are buffered for
  that socket and skipped in the room broadcast; the replay then sends the buffer,
  minus what it already sent.
* When the replay ends, the gate becomes a **floor**: the last offset the socket was
  sent. Live events at or below it (a relay lagging behind the database) are skipped
  for that socket; the first live event above it removes the floor.

Live pub/sub is at most once: while this node is not subscribed (Redis restarting), it
misses messages for good. So the manager keeps, per room, a **mark**: the offset through
which every socket of this node in the room was sent the stream (set when a replay
closes its gate, advanced by each live event that follows it without a gap). When the
subscription comes back after a loss, the manager calls `on_resubscribed`, and the
gateway catches each room up from the event table after its mark (app/gateway/catchup.py):
the clients see no disconnect and no gap, at worst a duplicate.

The node receives only its rooms' events (app/gateway/rooms.py): it subscribes to a
stream's own channel while the room has a local socket or gate, and listens on the shared
channel too, for what python-socketio's managers publish there (any service's `emit()`,
room changes by sid). Room emits of its own (typing) go on the room's channel as well.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import socketio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.core.channels import room_channel, room_prefix
from app.core.redisclients import async_redis
from app.core.redisurls import parse_redis_url
from app.gateway import direct, fanout
from app.gateway.rooms import RoomChannels, is_stream
from app.gateway.shards import ShardedPubSub

log = logging.getLogger("herald.gateway")

Buffered = tuple[int, str, list[Any]]  # (offset, event name, arguments)
MAX_RETRY_SLEEP = 2.0
PRUNE_MARKS_EVERY = 1000


class HeraldRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """AsyncRedisManager with per-socket replay gates and floors, and a fan-out without
    a task per socket."""

    def __init__(self, *args: Any, room_channels: bool = True, **kwargs: Any) -> None:
        # No silent reconnection inside redis-py: a lost subscription must be seen (its
        # rooms are then re-subscribed and caught up).
        kwargs.setdefault("redis_options", {"retry": Retry(NoBackoff(), 0)})
        super().__init__(*args, **kwargs)
        self.room_channels = room_channels  # emit to a stream room on its channel (typing)
        self.subscriptions = RoomChannels(room_prefix(self.channel))
        self.messages_received = 0  # messages this node took off Redis (both kinds)
        self._gates: dict[str, dict[str, list[Buffered]]] = {}
        self._floors: dict[str, dict[str, int]] = {}
        self._marks: dict[str, int] = {}
        self._notes = 0
        self.fast_fanout = True  # False: python-socketio's task-per-socket emit (bench, tests)
        self.on_resubscribed: Callable[[], Coroutine[Any, Any, None]] | None = None

    def set_server(self, server: Any) -> None:
        super().set_server(server)
        # New engine.io sockets become DirectSockets while the fast fan-out is on
        # (app/gateway/direct.py): idle websockets get frames written at once.
        direct.install(server, lambda: self.fast_fanout)

    def _redis_connect(self) -> None:
        """The client for any Redis URL Herald takes (app/core/redisclients.py): one Redis,
        a Sentinel's master, or a Redis Cluster."""
        self.redis = async_redis(self.redis_url, **self.redis_options)
        self.pubsub = None if self._cluster_options() is not None else \
            self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    def _cluster_options(self) -> dict[str, Any] | None:
        """The per-master connection options on a Redis Cluster (None: not a cluster)."""
        target = parse_redis_url(self.redis_url)
        return dict(target.options) if target.is_cluster else None

    def _new_pubsub(self) -> Any:
        """A listening connection: redis-py's PubSub, or one per master on a cluster."""
        options = self._cluster_options()
        if options is not None:
            return ShardedPubSub(self.redis, options)
        return self.redis.pubsub(ignore_subscribe_messages=False)

    # -- gates and floors ----------------------------------------------------------------
    def open_gate(self, sid: str, room: str) -> None:
        """Hold back live events of `room` for `sid` until `close_gate`; the node subscribes
        to the room's channel from now on (a connect reads the head after this)."""
        self._gates.setdefault(room, {})[sid] = []
        self._drop(self._floors, sid, room)
        if is_stream(room):
            self.subscriptions.want(room)

    def is_gated(self, sid: str, room: str) -> bool:
        return sid in self._gates.get(room, {})

    def take_buffer(self, sid: str, room: str) -> list[Buffered]:
        """Buffered live events for (sid, room) in offset order, emptied; the gate stays open."""
        gate = self._gates.get(room, {})
        buffered = gate.get(sid, [])
        if sid in gate:
            gate[sid] = []
        return sorted(buffered, key=lambda item: item[0])

    def close_gate(self, sid: str, room: str, floor: int | None = None) -> None:
        """Let live events through again, except those at or below `floor` (already sent)."""
        self._drop(self._gates, sid, room)
        if floor is not None and floor > 0 and self.is_connected(sid, "/"):
            self._floors.setdefault(room, {})[sid] = floor
        else:
            self._drop(self._floors, sid, room)
        self._unwanted(room)

    def close_all(self, sid: str) -> None:
        for table in (self._gates, self._floors):
            for room in [r for r, sids in table.items() if sid in sids]:
                self._drop(table, sid, room)
                self._unwanted(room)

    # -- room channels -------------------------------------------------------------------
    def basic_enter_room(self, sid: str, namespace: str, room: Any,
                         eio_sid: str | None = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if namespace == "/" and room != sid and is_stream(room):
            self.subscriptions.want(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        if namespace == "/" and room != sid:
            self._unwanted(room)

    def _unwanted(self, room: Any) -> None:
        """Unsubscribe `room` if no local socket is in it and no gate is open on it."""
        if room in self.subscriptions.wanted and room not in self._gates \
                and not self.rooms.get("/", {}).get(room):
            self.subscriptions.drop(room)

    async def enter_room(self, sid: str, namespace: str, room: Any,
                         eio_sid: str | None = None) -> None:
        """Enter, then wait until the room's channel is subscribed: a replay that follows
        reads the event table after that, so nothing published before it is missed."""
        await super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        if namespace == "/" and room in self.subscriptions.wanted:
            await self.subscriptions.ready([room])

    async def subscribed(self, rooms: list[str]) -> None:
        """Wait until the channels of `rooms` (gated or entered here) are subscribed."""
        await self.subscriptions.ready(rooms)

    async def _publish(self, data: dict[str, Any]) -> None:
        """A room emit of this node (typing) goes on the room's own channel: only the nodes
        holding that room get it. Anything else goes on the shared channel."""
        room = data.get("room")
        if (self.room_channels and isinstance(room, str) and data.get("method") == "emit"
                and is_stream(room) and data.get("callback") is None):
            try:
                if self.redis is None:
                    self._redis_connect()
                if self._cluster_options() is not None:
                    await self.redis.initialize()  # a no-op once done (its command parser)
                await self.redis.spublish(room_channel(self.channel, room),
                                          self.json.dumps(data))
            except Exception as exc:  # ephemeral (typing): at most once, like python-socketio
                log.warning("room emit not published room=%s error=%s", room,
                            type(exc).__name__)
            return
        await super()._publish(data)

    @staticmethod
    def _drop(table: dict[str, dict[str, Any]], sid: str, room: str) -> None:
        sids = table.get(room)
        if sids is not None:
            sids.pop(sid, None)
            if not sids:
                table.pop(room, None)

    # -- marks ---------------------------------------------------------------------------
    def mark(self, room: str) -> int | None:
        """The offset through which every socket here in `room` was sent the stream."""
        return self._marks.get(room)

    def note_sent(self, sid: str, room: str, last: int) -> None:
        """`sid` was sent `room` through `last` (its replay closed): lower the mark to it."""
        # any(): stops at the first other socket (a list of all members made every
        # connect cost O(sockets in the room), O(n²) for a room's n connects).
        others = any(s != sid for s in self.rooms.get("/", {}).get(room, {}))
        mark = self._marks.get(room)
        self._marks[room] = last if mark is None or not others else min(mark, last)
        self._notes += 1
        if self._notes % PRUNE_MARKS_EVERY == 0:
            self._prune_marks()

    def _prune_marks(self) -> None:
        """Forget the marks of rooms that emptied meanwhile: a look-up per mark, no copy of
        any room (copying every room's members made each connect cost O(sockets))."""
        namespace = self.rooms.get("/", {})
        for room in [r for r in self._marks if not namespace.get(r)]:
            self._marks.pop(room, None)

    def set_mark(self, room: str, last: int) -> None:
        """Every socket here in `room` was sent it through `last` (a catch-up closed)."""
        self._marks[room] = max(last, self._marks.get(room, 0))

    def live(self, room: str, offset: int) -> None:
        """A live event of `room` reached this node: the mark follows it, only without a gap
        (a message lost while unsubscribed leaves the mark before it, and the catch-up
        after resubscribing starts there)."""
        mark = self._marks.get(room)
        if mark is not None and offset == mark + 1:
            self._marks[room] = offset

    def members(self, room: str) -> list[str]:
        return list(self.rooms.get("/", {}).get(room, {}))

    def stream_rooms(self) -> dict[str, list[str]]:
        """Rooms (streams) with sockets here, and their sockets; forgets the marks of the rest."""
        namespace = self.rooms.get("/", {})
        sids = set(namespace.get(None, {}))
        rooms = {name: list(members) for name, members in namespace.items()
                 if name is not None and name not in sids and members}
        for room in [r for r in self._marks if r not in rooms]:
            self._marks.pop(room, None)
        return rooms

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        room = message.get("room")
        if not isinstance(room, str):
            await self._emit_here(message)
            return
        if room in self._marks or room in self._gates or room in self._floors:
            offset = _durable_offset(message, room)
            if offset is not None:
                self.live(room, offset)
            if offset is not None and (room in self._gates or room in self._floors):
                skip = self._hold_back(room, offset, message)
                if skip:
                    current = message.get("skip_sid")
                    current = current if isinstance(current, list) else (
                        [current] if current else [])
                    message = {**message, "skip_sid": [*current, *skip]}
        await self._emit_here(message)

    async def _emit_here(self, message: dict[str, Any]) -> None:
        """Deliver to this node's sockets: the fast path (app/gateway/fanout.py), or
        python-socketio's own for what it does not handle (binary, ack callbacks)."""
        if not (self.fast_fanout and await fanout.deliver(self, message)):
            await super()._handle_emit(message)

    def _hold_back(self, room: str, offset: int, message: dict[str, Any]) -> list[str]:
        """The sockets that must not get this live event now (buffered or already sent)."""
        skip: list[str] = []
        for sid, buffer in self._gates.get(room, {}).items():
            buffer.append((offset, message["event"], list(message["data"])))
            skip.append(sid)
        floors = self._floors.get(room, {})
        for sid, floor in list(floors.items()):
            if offset <= floor:
                skip.append(sid)
            else:
                self._drop(self._floors, sid, room)
        return skip

    # -- the subscription ----------------------------------------------------------------
    async def _listen(self) -> AsyncIterator[Any]:  # pragma: no cover
        """The messages of the shared channel and of the rooms' channels; Redis's answers
        to the room (un)subscriptions go to `subscriptions`."""
        shared = self.channel.encode()
        rooms = self.subscriptions
        async for message in self._redis_listen_with_retries():
            kind = message["type"]
            if kind == "smessage" or (kind == "message" and message["channel"] == shared):
                self.messages_received += 1
                yield message["data"]
            elif kind in ("ssubscribe", "sunsubscribe"):
                rooms.answered(message["channel"])

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:  # pragma: no cover
        """python-socketio's listener, with a short retry and a hook after a lost subscription.

        Overrides a private method of the pinned python-socketio version (5.x): same
        behaviour, but the retry sleep is capped at MAX_RETRY_SLEEP seconds (not 60) and
        `on_resubscribed` runs once the channel is subscribed again after a failure.
        """
        retry_sleep = 0.25
        lost = False
        while True:
            sub = None
            try:
                self._redis_connect()
                # Our own PubSub: python-socketio's `_publish` may replace `self.pubsub`.
                sub = self._new_pubsub()
                await sub.subscribe(self.channel)
                self.subscriptions.up(sub)  # every wanted room's channel, in one batch
                retry_sleep = 0.25
                if lost:
                    lost = False
                    log.warning("socketio subscription restored channel=%s", self.channel)
                    if self.on_resubscribed is not None:
                        task: asyncio.Task[None] = asyncio.create_task(self.on_resubscribed())
                        task.add_done_callback(_log_failure)
                async for message in sub.listen():
                    yield message
            except asyncio.CancelledError:
                self.subscriptions.lost()
                raise
            except Exception as exc:
                self.subscriptions.lost()
                await _close(sub)
                if not lost:
                    log.warning("socketio subscription lost channel=%s error=%s",
                                self.channel, type(exc).__name__)
                lost = True
                await asyncio.sleep(retry_sleep)
                retry_sleep = min(retry_sleep * 2, MAX_RETRY_SLEEP)


async def _close(sub: Any) -> None:
    """Close a failed PubSub (never left subscribed behind our back)."""
    if sub is None:
        return
    try:
        await sub.aclose()
    except Exception:  # closing a broken connection: nothing more to do
        return


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("resubscription hook failed error=%s", type(task.exception()).__name__)


def _durable_offset(message: dict[str, Any], room: str) -> int | None:
    """The offset of a durable event message of `room` (payload + meta), None otherwise."""
    data = message.get("data")
    if message.get("binary") or not isinstance(data, list) or len(data) != 2:
        return None
    meta = data[1]
    if (isinstance(meta, dict) and isinstance(meta.get("offset"), int)
            and meta.get("stream") == room):
        return int(meta["offset"])
    return None
