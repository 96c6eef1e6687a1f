"""Prometheus metrics at `/metrics` on every web node, named `herald_*`.

Where each number comes from (so any web node can serve the whole picture):
- the database (read at scrape time, true for the whole deployment): events appended
  (the sum of stream heads), events pending, streams behind, relay lag (the age of the
  oldest event not yet published), failed and retrying streams;
- Redis (workers count there, so no worker needs an HTTP port): events published,
  publish failures by reason, streams marked failed, the time of the last sweep — a hash
  `herald:metrics:<socketio channel>` incremented by the relay (`RelayMeter`);
- this web node (label `node`): connected sockets, joined rooms and room memberships,
  replayed events, refused connections by code.
Database and Redis numbers are the same on every node: aggregate them with `max`, not
`sum`. Per-node numbers are summed across nodes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from app.outbox import ops
from app.outbox.relay import RelayReport
from app.outbox.tables import EventRecord, Stream
from app.redisconn import quick_redis

log = logging.getLogger("herald.metrics")


def counters_key(channel: str) -> str:
    """The Redis hash holding the relay's counters for one deployment (one channel)."""
    return f"herald:metrics:{channel}"


class RelayMeter:
    """Counts what the relay did into Redis; a metrics failure never fails or slows the relay.

    Increments that Redis did not take (it is down: exactly when `transport_down` is
    worth counting) are kept in the process and added with the next write that works.
    """

    def __init__(self, redis_client: Any, *, channel: str) -> None:
        self.redis = redis_client
        self.key = counters_key(channel)
        self.unsent: Counter[str] = Counter()

    def _incr(self, fields: dict[str, int]) -> None:
        self.unsent.update({k: v for k, v in fields.items() if v})
        if not self.unsent:
            return
        try:
            pipe = self.redis.pipeline(transaction=True)
            for name, amount in self.unsent.items():
                pipe.hincrby(self.key, name, amount)
            pipe.execute()
        except Exception as exc:
            log.debug("relay metrics kept for later error=%s", type(exc).__name__)
            return
        self.unsent.clear()

    def published(self, events: Sequence[EventRecord]) -> None:
        """`relay(on_published=...)`: called after each batch went out."""
        self._incr({"published": len(events), "batches": 1})

    def swept(self, when: float) -> None:
        """A worker's sweep went through every stream at `when` (Unix time)."""
        try:
            self.redis.hset(self.key, "last_sweep", f"{when:.3f}")
        except Exception as exc:
            log.debug("sweep time not recorded error=%s", type(exc).__name__)

    def finish(self, report: RelayReport) -> None:
        """After a relay run: what failed."""
        self._incr({"failures:rejected": len(report.rejected),
                    "failures:transport_down": 1 if report.transport_down else 0,
                    "streams_failed": len(report.failed)})


_meters: dict[tuple[str, str], RelayMeter] = {}


def relay_meter(url: str, *, channel: str) -> RelayMeter:
    """This process's meter for a Redis URL and channel (its unsent counts live on)."""
    key = (url, channel)
    if key not in _meters:
        _meters[key] = RelayMeter(quick_redis(url), channel=channel)
    return _meters[key]


@dataclass
class NodeMetrics:
    """This web node's counters; the gateway calls `replayed` and `refused`."""

    node: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    replayed_total: int = 0
    refused_total: Counter[str] = field(default_factory=Counter)

    def replayed(self, count: int) -> None:
        self.replayed_total += count

    def refused(self, code: str) -> None:
        self.refused_total[code] += 1


@dataclass(frozen=True)
class NodeSnapshot:
    node: str
    sockets: int
    rooms: int
    memberships: int
    replayed: int
    refused: dict[str, int]


def node_snapshot(node: NodeMetrics, gateway: Any) -> NodeSnapshot:
    """Read on the event loop (the gateway's rooms change there)."""
    rooms = memberships = 0
    namespace = gateway.manager.rooms.get("/", {})
    sids = set(namespace.get(None, {}))
    for name, members in namespace.items():
        if name is None or name in sids or not members:
            continue
        rooms += 1
        memberships += len(members)
    return NodeSnapshot(node.node, len(sids), rooms, memberships, node.replayed_total,
                        dict(node.refused_total))


class _Collected(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _database(factory: Any) -> list[Metric]:
    with factory() as session:
        appended = session.scalar(select(func.coalesce(func.sum(Stream.head), 0))) or 0
        state = ops.status(session, limit=0)
    appended_family = CounterMetricFamily("herald_events_appended",
                                          "Events appended to the outbox (all streams).")
    appended_family.add_metric([], float(appended))
    return [
        appended_family,
        _gauge("herald_events_pending", "Events appended but not yet published.",
               state.events_pending),
        _gauge("herald_streams_behind", "Streams with events not yet published.",
               state.streams_behind),
        _gauge("herald_relay_lag_seconds", "Age of the oldest event not yet published (0: none).",
               state.oldest_pending_age or 0.0),
        _gauge("herald_failed_streams", "Streams the relay gave up on; they wait for a retry.",
               state.failed_streams),
        _gauge("herald_retrying_streams", "Streams waiting on a backoff delay after a failure.",
               state.retrying_streams),
    ]


def _redis(redis_client: Any, channel: str) -> list[Metric]:
    raw = redis_client.hgetall(counters_key(channel)) or {}
    values = {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}
    published = CounterMetricFamily("herald_events_published",
                                    "Events the relay published to the Socket.IO queue.")
    published.add_metric([], values.get("published", 0))
    batches = CounterMetricFamily("herald_relay_batches", "Relay batches published.")
    batches.add_metric([], values.get("batches", 0))
    failures = CounterMetricFamily(
        "herald_publish_failures",
        "Failed publishes: rejected (per stream, counted as an attempt) or transport_down "
        "(Redis unreachable, per relay run, not counted against any stream).",
        labels=["reason"])
    for reason in ("rejected", "transport_down"):
        failures.add_metric([reason], values.get(f"failures:{reason}", 0))
    marked = CounterMetricFamily("herald_streams_marked_failed",
                                 "Times a stream reached the attempt limit and was marked failed.")
    marked.add_metric([], values.get("streams_failed", 0))
    return [published, batches, failures, marked, *_sweep(values.get("last_sweep"))]


def _sweep(last: float | None) -> list[Metric]:
    """When a worker last swept every stream; +Inf seconds when none ever did."""
    return [
        _gauge("herald_relay_last_sweep_timestamp_seconds",
               "Unix time of the last complete relay sweep by any worker (0: never).",
               last or 0.0),
        _gauge("herald_relay_seconds_since_sweep",
               "Seconds since the last complete relay sweep by any worker (+Inf: never).",
               max(0.0, time.time() - last) if last else math.inf),
    ]


def _node(snap: NodeSnapshot) -> list[Metric]:
    labels = {"node": snap.node}
    replayed = CounterMetricFamily("herald_replayed_events",
                                   "Events replayed to reconnecting sockets by this node.",
                                   labels=["node"])
    replayed.add_metric([snap.node], snap.replayed)
    refused = CounterMetricFamily("herald_connections_refused",
                                  "Socket.IO connections refused by this node, by code.",
                                  labels=["node", "code"])
    for code, count in sorted(snap.refused.items()):
        refused.add_metric([snap.node, code], count)
    return [
        _gauge("herald_connected_sockets", "Sockets connected to this node.", snap.sockets,
               labels),
        _gauge("herald_joined_rooms", "Rooms (streams) with at least one socket on this node.",
               snap.rooms, labels),
        _gauge("herald_room_memberships", "Socket-room memberships on this node.",
               snap.memberships, labels),
        replayed, refused,
    ]


def render(*, factory: Any, redis_client: Any, channel: str, snap: NodeSnapshot) -> bytes:
    """The exposition text; a source that does not answer is reported as down, not raised."""
    families: list[Metric] = []
    up = GaugeMetricFamily("herald_metrics_source_up",
                           "1 if this scrape could read the source.", labels=["source"])
    sources: list[tuple[str, Callable[[], list[Metric]]]] = [
        ("database", lambda: _database(factory)),
        ("redis", lambda: _redis(redis_client, channel)),
    ]
    for source, read in sources:
        try:
            families.extend(read())
            up.add_metric([source], 1)
        except Exception as exc:
            log.warning("metrics source down source=%s error=%s", source, type(exc).__name__)
            up.add_metric([source], 0)
    families.extend(_node(snap))
    families.append(up)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(families))
    return bytes(generate_latest(registry))


router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus exposition of the outbox, the relay and this node."""
    ctx = request.app.state.ctx
    snap = node_snapshot(ctx.extras["node_metrics"], ctx.extras["gateway"])
    if "metrics_redis" not in ctx.extras:
        ctx.extras["metrics_redis"] = quick_redis(ctx.settings.sio_redis_url)
    body = await asyncio.to_thread(render, factory=ctx.factory,
                                   redis_client=ctx.extras["metrics_redis"],
                                   channel=ctx.settings.socketio_channel, snap=snap)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
