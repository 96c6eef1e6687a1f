"""`/metrics` moves with the events: what the relay published, what a node replayed."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import redis as redis_lib
import socketio

from app.api.metrics import exposition, render
from app.core.redisclients import quick_redis
from app.gateway.bounds import SocketBounds
from app.gateway.node_metrics import NodeSnapshot
from app.outbox import writer
from app.outbox.meter import RelayMeter, counters_key
from app.outbox.publisher import RedisPublisher
from app.outbox.relay import RelayReport
from app.outbox.streams import project_stream
from app.portal import projects
from testkit.clients import SocketClient, token
from testkit.databases import Database
from testkit.eventually import eventually, eventually_async
from testkit.localnode import local_node
from testkit.ops import scrape
from testkit.processes import free_port
from testkit.system import System
from testkit.testrun import fresh_name

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _metrics(system: System) -> Samples:
    answer = httpx.get(f"{system.url}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return scrape(answer.text)


def _value(samples: Samples, name: str, **labels: str) -> float:
    matches = [v for (n, found), v in samples.items()
               if n == name and all((k, v2) in found for k, v2 in labels.items())]
    assert len(matches) == 1, (name, labels, [k for k in samples if k[0] == name])
    return matches[0]


def _drained(system: System, timeout: float = 20) -> Samples:
    def drained() -> Samples | None:
        samples = _metrics(system)
        return samples if _value(samples, "herald_events_pending") == 0 else None

    return eventually(drained, "the relay did not drain the outbox", timeout, interval=0.1)


def test_published_and_appended_counters_rise_by_the_events_relayed(pg_system: System) -> None:
    api = pg_system.api()
    client_id, _ = api.user("client")
    project = api.project(client_id)
    before = _drained(pg_system)

    for progress in (10, 20, 30):  # each: project-updated + a notification to the client
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})
    after = _drained(pg_system)
    # A worker's relay thread writes its counters when it goes idle, just after its last
    # pass committed: they may trail the drained outbox by a moment.
    def counted() -> Samples | None:
        samples = _metrics(pg_system)
        return samples if _value(samples, "herald_events_published_total") \
            - _value(before, "herald_events_published_total") >= 6 else None

    after = eventually(counted, "the published counter did not rise by 6", 10)

    published = _value(after, "herald_events_published_total") \
        - _value(before, "herald_events_published_total")
    appended = _value(after, "herald_events_appended_total") \
        - _value(before, "herald_events_appended_total")
    assert (published, appended) == (6, 6)
    assert _value(after, "herald_relay_lag_seconds") == 0
    assert _value(after, "herald_failed_streams") == 0
    assert _value(after, "herald_metrics_source_up", source="redis") == 1
    assert _value(after, "herald_metrics_source_up", source="database") == 1


async def test_node_gauges_count_sockets_rooms_replays_and_refusals(pg_system: System) -> None:
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    for progress in (10, 20, 30):
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})
    before = _drained(pg_system)

    socket = SocketClient(pg_system.url, client_token,
                          positions={f"project-{project}": {"offset": 0}})
    refused = SocketClient(pg_system.url, "not-a-token")
    await socket.connect()
    try:
        await socket.wait_count("project-updated", 3)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect()
        assert refused.connect_error["data"]["code"] == "token_invalid"
        after = _metrics(pg_system)
    finally:
        await socket.close()

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("herald_connected_sockets") == 1
    assert delta("herald_replayed_events_total") == 3
    # user-{id}, clients and project-{id}: three rooms, each with this one socket
    assert delta("herald_joined_rooms") == 3 and delta("herald_room_memberships") == 3
    def refused(samples: Samples) -> float:
        return sum(v for (n, labels), v in samples.items()
                   if n == "herald_connections_refused_total"
                   and ("code", "token_invalid") in labels)

    assert refused(after) - refused(before) == 1

    def project_pages(samples: Samples, name: str) -> float:
        return sum(v for (n, labels), v in samples.items()
                   if n == name and ("kind", "project") in labels)

    # the project's replay asked for one page and read it (its user and role rooms
    # replayed from their heads: no read)
    for name in ("herald_replay_page_requests_total", "herald_replay_page_reads_total"):
        assert project_pages(after, name) - project_pages(before, name) == 1


def _snapshot() -> NodeSnapshot:
    return NodeSnapshot("test-node", 0, 0, 0, 0, {})


def test_relay_meter_counts_into_redis_what_every_node_then_serves(pg_db: Database,
                                                                  redis_url: str) -> None:
    channel = fresh_name("metrics")
    client = redis_lib.Redis.from_url(redis_url)
    meter = RelayMeter(client, channel=channel)
    with pg_db.factory() as session, session.begin():
        events = [writer.append(session, "user-1", "notification",
                                {"type": "info", "title": "t", "message": "m"})
                  for _ in range(3)]
    try:
        meter.published(events)
        meter.published(events[:1])
        meter.finish(RelayReport(published=4, rejected={"user-2": "x", "user-3": "y"},
                                 failed=["user-3"], transport_down=None))
        meter.finish(RelayReport(transport_down="redis unreachable"))
        samples = scrape(render(factory=pg_db.factory, redis_client=client, channel=channel,
                                snap=_snapshot()).decode())
        assert _value(samples, "herald_events_published_total") == 4
        assert _value(samples, "herald_relay_batches_total") == 2
        assert _value(samples, "herald_publish_failures_total", reason="rejected") == 2
        assert _value(samples, "herald_publish_failures_total", reason="transport_down") == 1
        assert _value(samples, "herald_streams_marked_failed_total") == 1
        assert _value(samples, "herald_events_appended_total") == 3
        assert _value(samples, "herald_events_pending") == 3
    finally:
        client.delete(counters_key(channel))
        client.close()


def test_a_scrape_without_redis_still_answers_and_says_redis_is_down(pg_db: Database) -> None:
    dead = quick_redis(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    samples = scrape(render(factory=pg_db.factory, redis_client=dead, channel="x",
                            snap=_snapshot()).decode())
    assert time.monotonic() - started < 5  # no retrying for seconds on a dead Redis
    assert _value(samples, "herald_metrics_source_up", source="redis") == 0
    assert _value(samples, "herald_metrics_source_up", source="database") == 1
    assert not any(name == "herald_events_published_total" for name, _ in samples)
    assert _value(samples, "herald_events_pending") == 0


def test_counts_redis_did_not_take_are_added_once_it_answers(pg_db: Database,
                                                             redis_url: str) -> None:
    channel = fresh_name("metrics")
    meter = RelayMeter(quick_redis(f"redis://127.0.0.1:{free_port()}/0"), channel=channel)
    meter.finish(RelayReport(transport_down="redis unreachable"))  # never raises
    meter.finish(RelayReport(transport_down="redis unreachable"))
    live = redis_lib.Redis.from_url(redis_url)
    try:
        assert live.hgetall(counters_key(channel)) == {}
        meter.redis = live  # Redis is back
        with pg_db.factory() as session, session.begin():
            event = writer.append(session, "user-1", "notification",
                                  {"type": "info", "title": "t", "message": "m"})
        meter.published([event])
        assert live.hgetall(counters_key(channel)) == {
            b"failures:transport_down": b"2", b"published": b"1", b"batches": b"1"}
        meter.published([event])
        assert live.hget(counters_key(channel), "failures:transport_down") == b"2"
    finally:
        live.delete(counters_key(channel))
        live.close()


async def test_gate_overflows_of_a_node_are_exported(pg_system_session: System,
                                                     redis_url: str) -> None:
    """A socket's gate held live events past its bound (as during a replay paced by a slow
    reader): the node's /metrics counts it in herald_gate_overflows_total."""
    tag = uuid.uuid4().hex[:8]
    with pg_system_session.factory() as session, session.begin():
        client = projects.create_user(session, email=f"go-{tag}@test", role="client")
        project = projects.create_project(session, name="P", client_id=client.id,
                                          technician_ids=[]).id
    stream = project_stream(project)
    bounds = SocketBounds(queue_bytes=4096, queue_packets=100, drain_timeout=5)
    async with local_node(pg_system_session, redis_url, bounds=bounds) as node:
        gateway = node.gateway
        socket = SocketClient(node.url, token(client.id, "client"))
        publisher = RedisPublisher(redis_url, channel=gateway.manager.channel)
        await socket.connect()
        try:
            assert (await socket.call("join-project", project))["ok"]
            before = _value(scrape(exposition([], gateway.snapshot()).decode()),
                            "herald_gate_overflows_total", node=gateway.metrics.node)
            gateway.manager.open_gate(socket.sio.get_sid("/"), stream)  # as a replay would
            with pg_system_session.factory() as session, session.begin():
                events = writer.append_rows(session, [(stream, "note", {"fill": "x" * 1000})
                                                      for _ in range(8)])
            publisher.publish(events)
            await eventually_async(lambda: gateway.manager.ordering.overflows > 0,
                                   "the gate never overflowed")
            after = _value(scrape(exposition([], gateway.snapshot()).decode()),
                           "herald_gate_overflows_total", node=gateway.metrics.node)
            assert after - before == gateway.manager.ordering.overflows >= 1
        finally:
            publisher.close()
            await socket.close()
