"""`/metrics` moves with the events: what the relay published, what a node replayed."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import System
from tests.support.clients import SocketClient
from tests.support.ops import scrape

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
    deadline = time.monotonic() + timeout
    while True:
        samples = _metrics(system)
        if _value(samples, "herald_events_pending") == 0:
            return samples
        assert time.monotonic() < deadline, "the relay did not drain the outbox"
        time.sleep(0.1)


def test_published_and_appended_counters_rise_by_the_events_relayed(pg_system: System) -> None:
    api = pg_system.api()
    client_id, _ = api.user("client")
    project = api.project(client_id)
    before = _drained(pg_system)

    for progress in (10, 20, 30):  # each: project-updated + a notification to the client
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})
    after = _drained(pg_system)

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
        with pytest.raises(Exception):  # noqa: B017  (the client raises its ConnectionError)
            await refused.connect()
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
