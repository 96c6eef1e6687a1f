"""Publishers: put events on the Socket.IO message queue, and *raise* when that fails.

python-socketio's own RedisManager.emit() logs "giving up" and returns None when Redis
refuses a publish, which would lose events silently. We build the message its
PubSubManager.emit() builds, then PUBLISH it ourselves, pipelined, and check every reply.

The relay's hot path (`RedisPublisher.publish_rows`) takes the rows as the relay read
them — the payload still as the JSON text PostgreSQL stored, the timestamp already
formatted — and builds each message's bytes with one bytes formatting per event (the
payload text is spliced in, never decoded and re-encoded), then the RESP commands
themselves, sent in one write per batch on a connection of redis-py's pool; replies are
read one by one (hiredis parses them when installed). Each event goes to its stream's own
channel (`SPUBLISH`, app/core/channels.py), which only the web nodes with a socket in
that room subscribe to; `room_channels=False` publishes on the shared channel instead
(`PUBLISH`, every node decodes every event: HERALD_ROOM_CHANNELS=false, for a rolling
upgrade from web nodes that listen on the shared channel only). The messages decode to exactly
what python-socketio's emit() builds, key order included (checked once at first use,
as for the dict build; otherwise the events go through emit()).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import redis
import socketio

from app.core import jsoncodec
from app.core.channels import room_channel
from app.core.db import iso_utc
from app.core.errors import PublishRejected, TransportDown
from app.core.redisclients import sync_redis
from app.core.redisurls import is_cluster
from app.core.sentinelmaster import stale_address
from app.outbox.tables import EventRecord

# Replies saying a cluster's slot is elsewhere or not served now: not the stream's fault.
_CLUSTER_MOVES = (redis.exceptions.MovedError, redis.exceptions.AskError,
                  redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError)


class Publisher(Protocol):
    """Publishes events to every Socket.IO node, in the given order, or raises DeliveryError."""

    def publish(self, events: Sequence[EventRecord]) -> None: ...

    def close(self) -> None: ...


class _MessageBuilder(socketio.PubSubManager):  # type: ignore[misc]
    """python-socketio's own emit(), captured instead of sent: the wire format stays theirs."""

    def __init__(self) -> None:
        super().__init__(write_only=True)
        self.captured: list[dict[str, Any]] = []

    def _publish(self, data: dict[str, Any]) -> None:
        self.captured.append(data)


def _encode(message: dict[str, Any]) -> bytes:
    return jsoncodec.dumps(message)


def _reference_messages(events: Sequence[EventRecord]) -> list[dict[str, Any]]:
    """The messages python-socketio's own PubSubManager.emit() builds for these events."""
    builder = _MessageBuilder()
    for event in events:
        builder.emit(event.type, (event.payload, event.meta), room=event.stream, namespace="/")
    return builder.captured


def _direct_message(event: EventRecord, host_id: str) -> dict[str, Any]:
    """The same message built directly (an event's payload is JSON: never binary)."""
    return {"method": "emit", "event": event.type, "data": [event.payload, event.meta],
            "binary": False, "namespace": "/", "room": event.stream, "skip_sid": None,
            "callback": None, "host_id": host_id}


@functools.cache
def _direct_is_exact() -> bool:
    """Whether the direct build equals python-socketio's, key order included (checked once)."""
    probe = EventRecord("00000000-0000-0000-0000-000000000000", "user-1", 1, "e", "probe",
                        {"a": [1, {"b": None}], "c": "d"}, datetime(2000, 1, 1, tzinfo=UTC))
    [reference] = _reference_messages([probe])
    direct = _direct_message(probe, reference["host_id"])
    return list(direct.items()) == list(reference.items())


def socketio_messages(events: Sequence[EventRecord]) -> list[bytes]:
    """Each event as the JSON message a python-socketio PubSubManager publishes.

    Built directly (going through emit() costs more than the PUBLISH itself), but only
    while that gives exactly what python-socketio's emit() builds; otherwise through it.
    """
    if not _direct_is_exact():
        return [_encode(message) for message in _reference_messages(events)]
    host_id = uuid.uuid4().hex
    return [_encode(_direct_message(event, host_id)) for event in events]


class Row(NamedTuple):
    """An event as the relay reads it from PostgreSQL, before any decoding.

    `payload` is the JSON text stored in the events table, `ts` the creation time already
    formatted as `EventRecord.meta` formats it (`iso_utc`).
    """

    stream: str
    epoch: str
    id: str
    offset: int
    type: str
    payload: str
    ts: str


def row_of(event: EventRecord) -> Row:
    """The row an event would be read as (the payload re-encoded as JSON text)."""
    return Row(event.stream, event.epoch, event.id, event.offset, event.type,
               jsoncodec.dumps(event.payload).decode(), iso_utc(event.ts))


def record_of(row: Row) -> EventRecord:
    """The event of a row (the payload decoded; `ts` parsed back from its text)."""
    return EventRecord(row.id, row.stream, row.offset, row.epoch, row.type,
                       jsoncodec.loads(row.payload),
                       datetime.fromisoformat(row.ts.replace("Z", "+00:00")))


_str = jsoncodec.dumps


def row_messages(rows: Sequence[Row], host_id: str | None = None) -> list[bytes]:
    """Each row as the message python-socketio's emit() publishes, built as bytes.

    `{"method":"emit","event":TYPE,"data":[PAYLOAD,{"id":…,"stream":…,"offset":…,
    "epoch":…,"ts":…}],"binary":false,"namespace":"/","room":STREAM,"skip_sid":null,
    "callback":null,"host_id":…}`, PAYLOAD being the stored JSON text as it is. The
    parts that depend only on the type or on the stream are built once per batch.
    """
    host = _str(host_id or uuid.uuid4().hex)
    messages: list[bytes] = []
    append = messages.append
    heads: dict[str, bytes] = {}
    middles: dict[tuple[str, str], tuple[bytes, bytes, bytes]] = {}
    join = b"".join
    for row in rows:
        head = heads.get(row.type)
        if head is None:
            head = heads[row.type] = b'{"method":"emit","event":' + _str(row.type) + \
                b',"data":['
        middle = middles.get((row.stream, row.epoch))
        if middle is None:
            name = _str(row.stream)
            middle = middles[(row.stream, row.epoch)] = (
                b',"stream":' + name + b',"offset":',
                b',"epoch":' + _str(row.epoch) + b',"ts":"',
                b'"}],"binary":false,"namespace":"/","room":' + name +
                b',"skip_sid":null,"callback":null,"host_id":' + host + b"}",
            )
        append(join((head, row.payload.encode(), b',{"id":', _str(row.id), middle[0],
                     b"%d" % row.offset, middle[1], row.ts.encode(), middle[2])))
    return messages


@functools.cache
def _rows_are_exact() -> bool:
    """Whether `row_messages` decodes to what python-socketio's emit() builds, key order
    included (checked once, with a probe event)."""
    probe = EventRecord("00000000-0000-0000-0000-000000000000", "user-1", 1, "e", "probe",
                        {"a": [1, {"b": None}], "c": "d"}, datetime(2000, 1, 1, tzinfo=UTC))
    [reference] = _reference_messages([probe])
    [built] = row_messages([row_of(probe)], reference["host_id"])
    return list(jsoncodec.loads(built.decode()).items()) == list(reference.items())


def _spublish_head(channel: str, stream: str) -> bytes:
    """The RESP command up to the message's length: SPUBLISH on `stream`'s channel."""
    name = room_channel(channel, stream).encode()
    return b"*3\r\n$8\r\nSPUBLISH\r\n$%d\r\n%s\r\n$" % (len(name), name)


class RedisPublisher:
    """Pipelined SPUBLISH to each stream's channel (or PUBLISH to the shared one) on Redis."""

    def __init__(self, url: str, *, channel: str = "socketio", timeout: float = 5.0,
                 room_channels: bool = True) -> None:
        self.channel = channel
        self.room_channels = room_channels
        self.redis = sync_redis(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
        self.cluster = is_cluster(url)
        self._stale = False  # a cluster's slot map to refresh before the next batch
        name = channel.encode()
        self._command = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$" % (len(name), name)

    def publish(self, events: Sequence[EventRecord]) -> None:
        """Publish records (python-socketio's message for each), in order."""
        if not events:
            return
        self._send([e.stream for e in events], socketio_messages(events))

    def publish_rows(self, rows: Sequence[Row]) -> None:
        """Publish rows as the relay read them, in order: the relay's hot path."""
        if not rows:
            return
        if _rows_are_exact():
            messages = row_messages(rows)
        else:  # python-socketio builds its messages differently now: go through emit()
            messages = socketio_messages([record_of(row) for row in rows])
        self._send([row.stream for row in rows], messages)

    def _send(self, streams: Sequence[str], messages: Sequence[bytes]) -> None:
        """(S)PUBLISH each message in one write, then read every reply: an error reply
        rejects that message's stream (PublishRejected), a connection error the batch
        (TransportDown). On a Redis Cluster, one write per node, each holding the messages
        of the slots that node owns (a stream's messages stay in order on its node)."""
        if self.room_channels:
            heads: dict[str, bytes] = {}
            for stream in streams:
                if stream not in heads:
                    heads[stream] = _spublish_head(self.channel, stream)
            packed = [heads[s] + b"%d\r\n%s\r\n" % (len(m), m)
                      for s, m in zip(streams, messages, strict=True)]
        else:
            command = self._command
            packed = [command + b"%d\r\n%s\r\n" % (len(m), m) for m in messages]
        failed: dict[str, str] = {}
        if self.cluster:
            for pool, indexes in self._by_node(streams):
                self._write(pool, [streams[i] for i in indexes], [packed[i] for i in indexes],
                            failed)
        else:
            self._write(self.redis.connection_pool, streams, packed, failed)
        if failed:
            raise PublishRejected(f"redis refused {len(failed)} stream(s)", failed=failed)

    def _by_node(self, streams: Sequence[str]) -> list[tuple[Any, list[int]]]:
        """The messages' indexes grouped by the cluster node owning their channel's slot,
        with that node's connection pool (the shared channel: any node, PUBLISH reaches
        the whole cluster)."""
        try:
            if self._stale:
                self.redis.nodes_manager.initialize()
                self._stale = False
            groups: dict[str, tuple[Any, list[int]]] = {}
            nodes: dict[str, Any] = {}
            for index, stream in enumerate(streams):
                node = nodes.get(stream)
                if node is None:
                    node = nodes[stream] = (
                        self.redis.get_node_from_key(room_channel(self.channel, stream))
                        if self.room_channels else self.redis.get_default_node())
                entry = groups.get(node.name)
                if entry is None:
                    pool = self.redis.get_redis_connection(node).connection_pool
                    entry = groups[node.name] = (pool, [])
                entry[1].append(index)
        except (redis.RedisError, OSError) as exc:
            self._stale = True
            raise TransportDown(f"redis cluster unreachable: {type(exc).__name__}: {exc}"
                                ) from exc
        return list(groups.values())

    def _write(self, pool: Any, streams: Sequence[str], packed: Sequence[bytes],
               failed: dict[str, str]) -> None:
        """Send `packed` in one write on a connection of `pool`, read a reply per message."""
        try:
            connection = pool.get_connection()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._stale = True
            raise TransportDown(f"redis unreachable: {type(exc).__name__}: {exc}") from exc
        self._on_master(pool, connection)
        try:
            connection.send_packed_command([b"".join(packed)])
            read = connection.read_response
            moved: Exception | None = None
            for stream in streams:
                try:
                    read()
                except _CLUSTER_MOVES as exc:  # a slot moved (failover): retry the batch later
                    moved = exc
                except redis.ResponseError as exc:
                    failed.setdefault(stream, f"{type(exc).__name__}: {exc}")
            if moved is not None:
                self._stale = True
                raise TransportDown(f"redis cluster changed: {type(moved).__name__}: {moved}")
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            connection.disconnect()
            self._stale = True
            raise TransportDown(f"redis unreachable: {type(exc).__name__}: {exc}") from exc
        except TransportDown:
            raise
        except BaseException:
            connection.disconnect()  # replies may be left unread: never reuse it
            raise
        finally:
            pool.release(connection)

    def _on_master(self, pool: Any, connection: Any) -> None:
        """On a Sentinel URL: the batch goes only to the master the sentinels name now.

        A connection opened on a master since replaced (restarted at once, it is an empty
        master until the sentinels reconfigure it) would take the batch and reach nobody
        listening on the new master: it is dropped and the batch refused (TransportDown:
        the relay retries, on a connection to the new master). Checked after the relay
        read the rows, so a web node that subscribes on the new master later catches them
        up from the table. One question to a sentinel per batch; nothing on other URLs."""
        master = stale_address(pool, connection)
        if master is not None:
            connection.disconnect()
            pool.release(connection)
            raise TransportDown(f"redis connection {connection.host}:{connection.port} is not "
                                f"on the sentinels' master {master[0]}:{master[1]}")

    def close(self) -> None:
        self.redis.close()


class MemoryPublisher:
    """Keeps what it was given, in order (unit tests); `fail_streams` makes chosen streams fail.

    It takes rows too (the relay's PostgreSQL path), kept as records (`record_of`) and,
    as they came, in `rows`."""

    def __init__(self) -> None:
        self.published: list[EventRecord] = []
        self.rows: list[Row] = []
        self.fail_streams: dict[str, str] = {}
        self.down = False

    def publish_rows(self, rows: Sequence[Row]) -> None:
        if self.down:
            raise TransportDown("memory transport is down")
        ok = [row for row in rows if row.stream not in self.fail_streams]
        self.rows.extend(ok)
        self.publish([record_of(row) for row in rows])

    def publish(self, events: Sequence[EventRecord]) -> None:
        if self.down:
            raise TransportDown("memory transport is down")
        failed = {e.stream: self.fail_streams[e.stream] for e in events
                  if e.stream in self.fail_streams}
        self.published.extend(e for e in events if e.stream not in failed)
        if failed:
            raise PublishRejected(f"refused {len(failed)} stream(s)", failed=failed)

    def close(self) -> None:
        return None
