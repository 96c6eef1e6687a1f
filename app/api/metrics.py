"""Prometheus metrics at `/metrics` on every web node, named `herald_*`: rendering and route.

Where each number comes from (so any web node can serve the whole picture):
- the database (read at scrape time, true for the whole deployment): events appended
  (the sum of stream heads), events pending, streams behind, failed and retrying streams
  (totals that triggers keep, app.outbox.counts: no scan), relay lag (the age of the
  oldest event not yet published);
- Redis (workers count there, so no worker needs an HTTP port): events published,
  publish failures by reason, streams marked failed, the time of the last sweep — a hash
  `<socketio channel>:metrics` incremented by the relay (`RelayMeter`);
- this web node (label `node`): connected sockets, joined rooms and room memberships,
  replayed events, replay page requests and the database reads they cost by stream kind
  (fewer reads than requests: sockets replaying the same page shared a read), refused
  connections by code, replay gates gone over their bound, the fast paths on
  (docs/fastpaths.md).
Database and Redis numbers are the same on every node: aggregate them with `max`, not
`sum`. Per-node numbers are summed across nodes. `/metrics` needs no token, so what it
reads from the database and Redis is reused for a second (app/api/recent.py): a flood of
scrapes costs them one read a second. This node's numbers are read at every scrape.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterator

import redis
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from app.api.deps import Context, NodeStats
from app.api.recent import Recent
from app.outbox import counts, liveness, ops
from app.outbox.meter import counters_key

log = logging.getLogger("herald.metrics")


class _Collected(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _database(factory: sessionmaker[Session],
              on_pending: Callable[[int], None] = lambda _n: None) -> list[Metric]:
    with factory() as session:
        appended = counts.read(session).appended
        state = ops.status(session, limit=0)
    on_pending(state.events_pending)  # the console's backlog chart (app.outbox.liveness)
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


def _redis(redis_client: redis.Redis[bytes], channel: str) -> list[Metric]:
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


def _node(snap: NodeStats) -> list[Metric]:
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
    received = CounterMetricFamily(
        "herald_node_messages_received",
        "Socket.IO messages this node took off Redis (shared channel and its rooms' channels).",
        labels=["node"])
    received.add_metric([snap.node], snap.messages_received)
    overflows = CounterMetricFamily(
        "herald_gate_overflows",
        "Times a socket's replay gates went over their bound on this node: the live events "
        "they held were dropped and read from the event table instead.", labels=["node"])
    overflows.add_metric([snap.node], snap.gate_overflows)
    requests = CounterMetricFamily(
        "herald_replay_page_requests",
        "Pages of events replaying sockets asked this node for, by stream kind.",
        labels=["node", "kind"])
    reads = CounterMetricFamily(
        "herald_replay_page_reads",
        "Database reads those pages cost (sockets replaying the same page at once share "
        "one), by stream kind.", labels=["node", "kind"])
    for family, by_kind in ((requests, snap.page_requests), (reads, snap.page_reads)):
        for kind, count in sorted(by_kind.items()):
            family.add_metric([snap.node, kind], count)
    fastpaths = GaugeMetricFamily("herald_fastpath_enabled",
                                  "1 if this node runs the fast path, 0 if it fell back or is "
                                  "switched off (docs/fastpaths.md).", labels=["node", "path"])
    for path, on in sorted(snap.fastpaths.items()):
        fastpaths.add_metric([snap.node, path], 1.0 if on else 0.0)
    return [
        _gauge("herald_connected_sockets", "Sockets connected to this node.", snap.sockets,
               labels),
        _gauge("herald_joined_rooms", "Rooms (streams) with at least one socket on this node.",
               snap.rooms, labels),
        _gauge("herald_room_memberships", "Socket-room memberships on this node.",
               snap.memberships, labels),
        _gauge("herald_node_room_channels",
               "Stream channels this node is subscribed to (rooms with a socket here).",
               snap.room_channels, labels),
        replayed, requests, reads, refused, received, overflows, fastpaths,
    ]


def shared(*, factory: sessionmaker[Session], redis_client: redis.Redis[bytes],
           channel: str) -> list[Metric]:
    """The database's and Redis's families (the same on every node), with whether each
    source answered; a source that does not answer is reported as down, not raised."""
    families: list[Metric] = []
    up = GaugeMetricFamily("herald_metrics_source_up",
                           "1 if this scrape could read the source.", labels=["source"])
    sources: list[tuple[str, Callable[[], list[Metric]]]] = [
        ("database", lambda: _database(
            factory, lambda n: liveness.record_backlog(redis_client, channel, n))),
        ("redis", lambda: _redis(redis_client, channel)),
    ]
    for source, read in sources:
        try:
            families.extend(read())
            up.add_metric([source], 1)
        except Exception as exc:
            log.warning("metrics source down source=%s error=%s", source, type(exc).__name__)
            up.add_metric([source], 0)
    families.append(up)
    return families


def exposition(families: list[Metric], snap: NodeStats) -> bytes:
    """The exposition text of the shared families and this node's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected([*families, *_node(snap)]))
    return bytes(generate_latest(registry))


def render(*, factory: sessionmaker[Session], redis_client: redis.Redis[bytes], channel: str,
           snap: NodeStats) -> bytes:
    """The exposition text, every source read now."""
    return exposition(shared(factory=factory, redis_client=redis_client, channel=channel), snap)


router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(ctx: Context) -> Response:
    """Prometheus exposition of the outbox, the relay and this node."""
    recent = ctx.recent.setdefault("metrics", Recent())  # the database's and Redis's
    families = await recent.get(lambda: asyncio.to_thread(
        shared, factory=ctx.factory, redis_client=ctx.redis.sio,
        channel=ctx.settings.socketio_channel))
    return Response(exposition(families, ctx.node.snapshot()), media_type=CONTENT_TYPE_LATEST)
