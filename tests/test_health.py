"""Health: /healthz is the process, /readyz is the database and Redis; a Redis outage
does not lose or block domain writes, and the backlog drains by itself afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.redisclients import quick_redis
from app.core.settings import Settings
from app.main import create_app
from app.outbox.publisher import RedisPublisher
from app.outbox.relay import RelayPolicy, relay
from testkit.clients import user_token
from testkit.databases import Database
from testkit.eventually import eventually
from testkit.processes import WebNode, Worker
from testkit.redis import PrivateRedis


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def _until(probe: Any, done: Any, timeout: float = 30) -> Any:
    last: list[Any] = [None]

    def check() -> tuple[Any] | None:  # a tuple: a value that is done may be falsy
        last[0] = value = probe()
        return (value,) if done(value) else None

    return eventually(check, lambda: f"timed out; last: {last[0]}", timeout, interval=0.1)[0]


def test_redis_outage_keeps_writes_fails_readiness_and_drains_by_itself(
    pg_db: Database, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """The whole Redis goes away: Celery broker and Socket.IO message queue alike."""
    env = {"DATABASE_URL": pg_db.url, "REDIS_URL": private_redis.url,
           "SOCKETIO_REDIS_URL": private_redis.url}
    web, worker = WebNode(env, tmp_path), Worker(env, tmp_path)
    web.start()
    worker.start()
    http = httpx.Client(base_url=web.url, timeout=15,
                        headers={"Authorization": f"Bearer {user_token(pg_db.factory, 'admin')}"})

    def outbox() -> dict[str, Any]:
        answer = http.get("/api/admin/outbox")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    try:
        client = http.post("/api/users", json={"email": "c@x.io", "role": "client"}).json()
        project = http.post("/api/projects", json={"name": "P", "clientId": client["id"]}
                            ).json()["id"]
        http.patch(f"/api/projects/{project}", json={"progress": 1}).raise_for_status()
        _until(outbox, lambda s: s["eventsPending"] == 0)
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}

        private_redis.stop()
        down = _until(lambda: http.get("/readyz"), lambda r: r.status_code == 503)
        assert down.json()["checks"]["database"] == "ok"
        assert down.json()["checks"]["redis"].startswith("down")
        assert http.get("/healthz").status_code == 200

        for progress in (2, 3, 4):  # each commits project-updated + a notification
            answer = http.patch(f"/api/projects/{project}", json={"progress": progress})
            assert answer.status_code == 200, answer.text
            assert answer.json()["progress"] == progress
        # what a worker's relay run does now: Redis is unreachable, no stream is blamed
        publisher = RedisPublisher(private_redis.url, channel=os.environ["HERALD_SOCKETIO_CHANNEL"],
                                   timeout=1)
        # without redis-py's reconnect retries: the worker's Celery consumer backs off
        # longer the longer Redis stays away, so keep the outage short
        publisher.redis = quick_redis(private_redis.url)
        # (again if the worker's own relay run held the streams' claim at that moment:
        # then this one claimed nothing and tried no publish)
        report = _until(lambda: relay(session_factory=pg_db.factory, publisher=publisher,
                                      policy=RelayPolicy(max_attempts=1)),
                        lambda r: r.transport_down is not None or r.published)
        publisher.close()
        assert report.transport_down is not None and report.published == 0
        stuck = outbox()
        assert (stuck["eventsPending"], stuck["streamsBehind"]) == (6, 2)
        assert (stuck["failedStreams"], stuck["retryingStreams"]) == (0, 0)
        assert all(s["attempts"] == 0 and s["nextAttemptAt"] is None for s in stuck["streams"])

        private_redis.start()  # same port; nobody runs a command
        drained = _until(outbox, lambda s: s["eventsPending"] == 0, timeout=60)
        assert (drained["failedStreams"], drained["streamsBehind"]) == (0, 0)
        assert _until(lambda: http.get("/readyz"), lambda r: r.status_code == 200)
    finally:
        http.close()
        worker.stop()
        web.stop()


@pytest.mark.anyio
async def test_readyz_names_the_database_when_it_does_not_answer(redis_url: str) -> None:
    """The readiness handler itself, in process, against a database port nobody listens on."""
    settings = Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:1/none",
                        redis_url=redis_url)
    api = create_app(settings)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api),
                                     base_url="http://herald") as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            answer = await http.get("/readyz")
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "unavailable" and body["checks"]["redis"] == "ok"
        assert body["checks"]["database"].startswith("down: ")
    finally:
        api.herald.close()
