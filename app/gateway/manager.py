"""A Redis client manager that keeps each socket's view of a stream in offset order.

The ordering model itself — per-socket gates that hold live events while a replay runs,
floors that drop what a replay already sent, per-room marks — is app/gateway/ordering.py
(`self.ordering`). This subclass of python-socketio's AsyncRedisManager is the
integration: it hands every durable live event of a room to the model before the room
broadcast (`_handle_emit`) and skips the sockets it names; opening a gate subscribes the
room's channel, closing the last one may unsubscribe it; a gate closes on a floor only for
a socket still connected.

Live pub/sub is at most once: while this node is not subscribed (Redis restarting), it
misses messages for good. When the subscription comes back after a loss, the manager
calls `on_resubscribed`, and the gateway catches each room up from the event table after
its mark (app/gateway/catchup.py): the clients see no disconnect and no gap, at worst a
duplicate. On a Sentinel URL a listening connection found off the sentinels' master
(app/gateway/masterwatch.py) is closed, and counts as lost the same way.

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
from app.gateway.masterwatch import needs_watch, watch_master
from app.gateway.ordering import Ordering
from app.gateway.presenceout import PresenceOut, is_presence
from app.gateway.rooms import RoomChannels, is_stream
from app.gateway.shards import ShardedPubSub

log = logging.getLogger("herald.gateway")

MAX_RETRY_SLEEP = 2.0


class HeraldRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """AsyncRedisManager with the ordering model's gates, floors and marks applied to
    live events, and a fan-out without a task per socket.

    `hold_bytes`/`hold_packets`: what one socket's gates may hold (app/gateway/ordering.py;
    the gateway passes its send queue's bounds)."""

    def __init__(self, *args: Any, room_channels: bool = True, hold_bytes: int = 2 * 2**20,
                 hold_packets: int = 5000, **kwargs: Any) -> None:
        # No silent reconnection inside redis-py: a lost subscription must be seen (its
        # rooms are then re-subscribed and caught up).
        kwargs.setdefault("redis_options", {"retry": Retry(NoBackoff(), 0)})
        super().__init__(*args, **kwargs)
        self.room_channels = room_channels  # emit to a stream room on its channel (typing)
        self.subscriptions = RoomChannels(room_prefix(self.channel))
        self.messages_received = 0  # messages this node took off Redis (both kinds)
        self.ordering = Ordering(lambda room: self.rooms.get("/", {}).get(room, {}),
                                 max_bytes=hold_bytes, max_packets=hold_packets)
        self.fast_fanout = True  # False: python-socketio's task-per-socket emit (bench, tests)
        self.on_resubscribed: Callable[[], Coroutine[Any, Any, None]] | None = None
        # Presence events: none before `connected`, held (coalesced) for a full queue.
        self.presence_out = PresenceOut(self)

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

    # -- gates (the model: app/gateway/ordering.py) -------------------------------------
    def open_gate(self, sid: str, room: str) -> None:
        """Hold back live events of `room` for `sid` until `close_gate`; the node subscribes
        to the room's channel from now on (a connect reads the head after this)."""
        self.ordering.open_gate(sid, room)
        if is_stream(room):
            self.subscriptions.want(room)

    def close_gate(self, sid: str, room: str, floor: int | None = None) -> None:
        """Let live events through again, except those at or below `floor` (already sent)
        while `sid` is connected; unsubscribe the room if nobody here needs it now."""
        connected = floor is not None and self.is_connected(sid, "/")
        self.ordering.close_gate(sid, room, floor if connected else None)
        self._unwanted(room)

    def close_all(self, sid: str) -> None:
        """`sid` is gone (or failed its connect): its gates, floors and held presence go."""
        self.presence_out.forget(sid)
        for room in self.ordering.close_all(sid):
            self._unwanted(room)

    # -- room channels -------------------------------------------------------------------
    def basic_enter_room(self, sid: str, namespace: str, room: Any,
                         eio_sid: str | None = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if namespace == "/" and room != sid and is_stream(room):
            self.subscriptions.want(room)
            self.presence_out.moved(sid, room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        if namespace == "/" and room != sid:
            self._unwanted(room)
            self.presence_out.moved(sid, room)

    def _unwanted(self, room: Any) -> None:
        """Unsubscribe `room` if no local socket is in it and no gate is open on it."""
        if room in self.subscriptions.wanted and not self.ordering.gated(room) \
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

    # -- rooms and live events ---------------------------------------------------------
    def members(self, room: str) -> list[str]:
        return list(self.rooms.get("/", {}).get(room, {}))

    def stream_rooms(self) -> dict[str, list[str]]:
        """Rooms (streams) with sockets here, and their sockets; forgets the marks of the rest."""
        namespace = self.rooms.get("/", {})
        sids = set(namespace.get(None, {}))
        rooms = {name: list(members) for name, members in namespace.items()
                 if name is not None and name not in sids and members}
        self.ordering.keep_marks(rooms)
        return rooms

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        """A room emit from Redis: the ordering model sees each durable event first and
        names the sockets it holds it back from (`skip_sid`). Presence events go their own
        way (app/gateway/presenceout.py)."""
        if is_presence(message):
            await self.presence_out.deliver(message)
            return
        room = message.get("room")
        if isinstance(room, str) and self.ordering.watches(room):
            offset = _durable_offset(message, room)
            if offset is not None:
                skip = self.ordering.on_live(room, offset, message["event"], message["data"])
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
            watch: asyncio.Task[None] | None = None
            try:
                self._redis_connect()
                # Our own PubSub: python-socketio's `_publish` may replace `self.pubsub`.
                sub = self._new_pubsub()
                await sub.subscribe(self.channel)
                self.subscriptions.up(sub)  # every wanted room's channel, in one batch
                if needs_watch(sub):  # a Sentinel's: off its master, it is a lost one
                    watch = asyncio.create_task(watch_master(sub))
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
            finally:
                if watch is not None:
                    watch.cancel()


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
