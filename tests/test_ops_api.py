"""What the operators' console reads and does, over the admin HTTP API: a stream's detail,
the filter, retry that leaves healthy streams alone, the relay rate, and the live
workers and web nodes from their heartbeats (real web node, real Celery worker, real
Redis; heartbeats every 0.5 s in tests, expiring after 1.5 s)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import update

from app.core.db import utcnow
from app.core.settings import Settings
from app.outbox import liveness, ops, writer
from app.outbox.tables import RelayCursor
from testkit.clients import Api, SocketClient
from testkit.databases import Database
from testkit.eventually import eventually
from testkit.processes import WebNode, free_port
from testkit.system import System
from testkit.testrun import REDIS_URL

pytestmark = pytest.mark.anyio


def _until(check: Callable[[], Any], timeout: float = 20) -> Any:
    return eventually(check, "condition not met in time", timeout, interval=0.1)


def _fail(factory: Any, stream: str, error: str, *, state: str = "failed") -> None:
    """`stream` with one event, failed (or backing off) with `error`."""
    with factory() as session, session.begin():
        writer.append(session, stream, "notification", {"n": 1})
        session.execute(update(RelayCursor).where(RelayCursor.stream == stream).values(
            state=state, attempts=3, last_error=error,
            failed_at=utcnow() if state == "failed" else None,
            next_attempt_at=None if state == "failed" else utcnow() + timedelta(hours=1)))


def test_a_streams_detail_has_its_cursor_and_last_events_with_payloads(
    pg_system: System,
) -> None:
    api = pg_system.api()
    client_id, _ = api.user("client")
    project = api.project(client_id)
    for progress in (10, 20, 30):
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})
    stream = f"project-{project}"
    detail = _until(lambda: (d := api.ok("GET", f"/api/admin/outbox/streams/{stream}?events=2"))
                    ["dispatched"] == 3 and d)
    assert (detail["stream"], detail["head"], detail["pending"], detail["state"]) == (
        stream, 3, 0, "active")
    assert detail["attempts"] == 0 and detail["lastError"] is None
    assert [e["offset"] for e in detail["events"]] == [3, 2]  # newest first, as many as asked
    assert detail["events"][0]["payload"]["progress"] == 30
    assert detail["events"][0]["published"] is True and detail["events"][0]["type"]
    assert api.request("GET", "/api/admin/outbox/streams/project-999999").status_code == 404
    assert api.request("GET", "/api/admin/outbox/streams/nonsense").status_code == 422
    assert api.request("GET", f"/api/admin/outbox/streams/{stream}?events=101"
                       ).status_code == 422


def test_the_filter_finds_streams_by_name_or_error_in_any_case(pg_system: System) -> None:
    _fail(pg_system.factory, "user-41", "ResponseError: OOM command not allowed")
    _fail(pg_system.factory, "user-42", "NoPermissionError: 100%_refused", state="active")
    api = pg_system.api()

    def listed(q: str) -> list[str]:
        return [s["stream"] for s in api.ok("GET", "/api/admin/outbox", params={"q": q})
                ["streams"]]

    assert listed("user-41") == ["user-41"]
    assert listed("oom COMMAND") == ["user-41"]
    assert listed("100%_") == ["user-42"]  # % and _ are plain text, not patterns
    assert listed("%") == ["user-42"]
    assert listed("nothing like it") == []
    assert api.ok("GET", "/api/admin/outbox", params={"q": "nothing"})["failedStreams"] == 1


def test_a_filter_no_database_can_store_is_refused_with_422(pg_system: System) -> None:
    """PostgreSQL refuses NUL in text: such a filter was a 500 (found by the schema fuzz)."""
    answer = pg_system.api().request("GET", "/api/admin/outbox", params={"q": "a\x00b"})
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid"


def test_retry_leaves_a_healthy_stream_unchanged_and_says_so(db: Database) -> None:
    with db.factory() as session, session.begin():
        writer.append(session, "user-1", "notification", {"n": 1})
    _fail(db.factory, "user-2", "boom")
    done = ops.retry(db.factory, streams=["user-1", "user-2"])
    assert done == ops.Retried(retried=["user-2"], healthy=["user-1"])
    with db.factory() as session:
        cursor = session.get(RelayCursor, "user-1")
        assert cursor is not None and (cursor.state, cursor.dispatched) == ("active", 0)


def test_the_rate_counts_what_the_workers_publish_and_the_backlog_when_looked_at(
    pg_system: System,
) -> None:
    api = pg_system.api()
    before = api.ok("GET", "/api/admin/outbox/rate")
    assert before["bucketSeconds"] == 10 and len(before["samples"]) == 90
    client_id, _ = api.user("client")
    project = api.project(client_id)
    for progress in range(1, 6):  # 5 project-updated + 5 notifications
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})
    _until(lambda: api.ok("GET", "/api/admin/outbox/rate")["published"]
           >= before["published"] + 10)
    api.ok("GET", "/api/admin/outbox")  # looking at the backlog records it
    latest = api.ok("GET", "/api/admin/outbox/rate")["samples"][-1]
    assert latest["pending"] is not None


def test_nodes_lists_live_workers_with_their_last_sweep_and_web_nodes_with_sockets(
    pg_system: System,
) -> None:
    api = pg_system.api()
    worker_proc, web_proc = pg_system.workers[0].proc, pg_system.webs[0].proc
    assert worker_proc is not None and web_proc is not None

    def ours() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        nodes = api.ok("GET", "/api/admin/nodes")
        # a worker started for this test beats first before its first sweep
        workers = [w for w in nodes["workers"] if w["pid"] == worker_proc.pid
                   and w["sweepAgeSeconds"] is not None]
        webs = [n for n in nodes["webNodes"] if n["pid"] == web_proc.pid]
        return (workers, webs) if workers and webs else None

    [worker], [web] = _until(ours)
    assert worker["relayThread"] is True and worker["queue"] == Settings().celery_queue
    assert worker["sweepAgeSeconds"] < 10
    assert web["id"].endswith(f":{web_proc.pid}") and web["sockets"] >= 0


async def test_a_web_nodes_heartbeat_counts_its_sockets(pg_system: System) -> None:
    api = pg_system.api()
    web_proc = pg_system.webs[0].proc
    assert web_proc is not None
    _, token = api.user("client")
    socket = SocketClient(pg_system.url, token)
    await socket.connect()

    def ours() -> dict[str, Any] | None:
        webs = api.ok("GET", "/api/admin/nodes")["webNodes"]
        # a beat may fall between the socket's connect and its entering its rooms
        return next((n for n in webs if n["pid"] == web_proc.pid and n["sockets"] >= 1
                     and n["rooms"] >= 1), None)  # at least the user's own stream

    try:
        assert _until(ours)["memberships"] >= 1
    finally:
        await socket.close()


def test_a_killed_worker_leaves_the_list_when_its_heartbeat_expires_a_stopped_one_at_once(
    pg_system: System,
) -> None:
    api = pg_system.api()

    def worker_pids() -> set[str]:
        return {w["id"].split(":")[-1] for w in api.ok("GET", "/api/admin/nodes")["workers"]}

    killed, stopped = pg_system.add_worker(), pg_system.add_worker()
    assert killed.proc and stopped.proc
    pids = {str(killed.proc.pid), str(stopped.proc.pid)}
    _until(lambda: pids <= worker_pids())
    stopped.stop()
    assert str(stopped.proc.pid) not in worker_pids()  # it said goodbye
    killed.kill()
    _until(lambda: str(killed.proc.pid) not in worker_pids() if killed.proc else True)
    pg_system.workers.remove(killed)
    pg_system.workers.remove(stopped)


def test_heartbeats_expire_on_their_own() -> None:
    client = redis_lib.Redis.from_url(REDIS_URL)
    beats = liveness.Heartbeats(client, f"{Settings().socketio_channel}-expiry")
    try:
        beats.beat("worker", "w1", {"queue": "q"}, ttl=0.3)
        beats.beat("worker", "w2", {"queue": "q"}, ttl=30)
        assert [w["id"] for w in beats.alive("worker")] == ["w1", "w2"]
        _until(lambda: [w["id"] for w in beats.alive("worker")] == ["w2"], timeout=5)
        beats.gone("worker", "w2")
        assert beats.alive("worker") == []
    finally:
        client.close()


def test_the_console_routes_need_an_admin(pg_system: System) -> None:
    api = pg_system.api()
    _, tech = api.user("technician")
    for path in ("/api/admin/nodes", "/api/admin/outbox/rate",
                 "/api/admin/outbox/streams/user-1", "/api/admin/outbox?q=x"):
        assert api.request("GET", path, token="").status_code == 401, path
        answer = api.request("GET", path, token=tech)
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden", path


def test_the_console_page_and_its_modules_are_served(pg_system: System) -> None:
    http = pg_system.api().http
    page = http.get("/ops/")
    assert page.status_code == 200 and "operators' console" in page.text
    for path in ("/ops/ops.js", "/portal/session.js"):  # it signs in as the portal does
        response = http.get(path)
        assert response.status_code == 200 and "javascript" in response.headers[
            "content-type"], path
    assert http.get("/ops/ops.css").status_code == 200
    assert http.get("/ops", follow_redirects=True).url.path == "/ops/"


def test_without_redis_the_console_keeps_the_database_numbers_and_answers_503_for_the_rest(
    pg_system: System, tmp_path: Path,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    node = WebNode({**pg_system.env, "SOCKETIO_REDIS_URL": dead}, tmp_path)
    node.start()
    try:
        api = Api(node.url, pg_system.admin_token)
        assert api.request("GET", "/api/admin/outbox").status_code == 200
        for path in ("/api/admin/nodes", "/api/admin/outbox/rate"):
            answer = api.request("GET", path)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["error"]["code"] == "unavailable"
        api.close()
    finally:
        node.stop()
