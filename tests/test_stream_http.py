"""GET /api/streams/{stream}/events: the same events, meta and permissions as replay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from app.core.db import utcnow
from app.outbox.retention import prune_events
from app.outbox.writer import append
from testkit.clients import SocketClient
from testkit.system import System
from tests.test_replay import wait_dispatched

pytestmark = pytest.mark.anyio


def emit(system: System, stream: str, count: int) -> None:
    with system.factory() as session, session.begin():
        for i in range(count):
            append(session, stream, "notification",
                   {"type": "info", "title": f"t{i}", "message": f"m{i}"})


async def test_http_returns_the_events_a_socket_received_with_the_same_meta(
    system: System,
) -> None:
    api = system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    socket = SocketClient(system.url, client_token)
    await socket.connect()
    try:
        await socket.call("join-project", project)
        for progress in (10, 20, 30):
            api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})
        live = await socket.wait_count("project-updated", 3)
    finally:
        await socket.close()
    body = api.ok("GET", f"/api/streams/{stream}/events", token=client_token)
    assert body["events"] == [{"type": e.name, "payload": e.payload, "meta": e.meta}
                              for e in live]
    assert body["head"] == {"offset": 3, "epoch": live[0].meta["epoch"]}  # type: ignore[index]


def test_http_pages_with_after_and_limit(pg_system: System) -> None:
    api = pg_system.api()
    stream = "technicians"
    emit(pg_system, stream, 7)
    _, tech_token = api.user("technician")
    page = api.ok("GET", f"/api/streams/{stream}/events?after=2&limit=3", token=tech_token)
    assert [e["meta"]["offset"] for e in page["events"]] == [3, 4, 5]
    assert page["head"]["offset"] == 7
    rest = api.ok("GET", f"/api/streams/{stream}/events?after=5&limit=100", token=tech_token)
    assert [e["meta"]["offset"] for e in rest["events"]] == [6, 7]
    beyond = api.ok("GET", f"/api/streams/{stream}/events?after=7", token=tech_token)
    assert beyond["events"] == [] and beyond["head"]["offset"] == 7


def test_http_refuses_a_stream_the_caller_may_not_read(pg_system: System) -> None:
    api = pg_system.api()
    owner_id, _ = api.user("client")
    _, outsider_token = api.user("client")
    _, tech_token = api.user("technician")
    project = api.project(owner_id)
    # A project's or a user's stream they may not read: as if it did not exist (404); the
    # role streams, public names: 403.
    for stream, tok, refusal in ((f"project-{project}", outsider_token, (404, "not_found")),
                                 (f"user-{owner_id}", tech_token, (404, "not_found")),
                                 ("admins", tech_token, (403, "forbidden")),
                                 ("clients", tech_token, (403, "forbidden"))):
        response = api.request("GET", f"/api/streams/{stream}/events", token=tok)
        assert (response.status_code, response.json()["error"]["code"]) == refusal, stream


def test_http_rejects_bad_input_without_a_500(pg_system: System) -> None:
    api = pg_system.api()
    assert api.request("GET", "/api/streams/clients/events", token="").status_code == 401
    for path in ("/api/streams/nonsense/events", "/api/streams/clients/events?after=-1",
                 "/api/streams/clients/events?after=abc", "/api/streams/clients/events?limit=0",
                 "/api/streams/clients/events?limit=100000",
                 f"/api/streams/clients/events?after={2**63}"):
        response = api.request("GET", path)
        assert response.status_code == 422, (path, response.status_code, response.text)
        assert "error" in response.json()


def test_http_answers_410_for_pruned_events_and_serves_the_rest(pg_system: System) -> None:
    api = pg_system.api()
    stream = "clients"
    emit(pg_system, stream, 5)
    wait_dispatched(pg_system, [stream])
    with pg_system.factory() as session, session.begin():
        session.execute(text("UPDATE events SET created_at = :old WHERE stream = :s "
                             "AND \"offset\" <= 2"),
                        {"old": utcnow() - timedelta(days=9), "s": stream})
    assert prune_events(pg_system.factory, retention=timedelta(days=7)) == 2
    _, client_token = api.user("client")
    for after in (0, 1):
        response = api.request("GET", f"/api/streams/{stream}/events?after={after}",
                               token=client_token)
        assert response.status_code == 410, response.text
        assert response.json()["error"]["code"] == "gone"
    body = api.ok("GET", f"/api/streams/{stream}/events?after=2", token=client_token)
    assert [e["meta"]["offset"] for e in body["events"]] == [3, 4, 5]
