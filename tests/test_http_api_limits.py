"""What the HTTP API bounds per route and per user: body sizes (a PATCH needs kilobytes,
the batch publish megabytes).

Against the session's real web node (default settings), over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from app.core.settings import Settings
from app.main import create_app
from testkit.processes import WebNode
from testkit.world import World


@pytest.fixture(scope="module")
def strict(world: World) -> Iterator[WebNode]:
    """A node with a small write rate, counting on a channel of its own (rate windows are
    keyed by channel and user id)."""
    channel = f"{os.environ['HERALD_SOCKETIO_CHANNEL']}-writes-{uuid.uuid4().hex[:6]}"
    web = WebNode({**world.system.env, "HERALD_RATE_WRITES": "5/minute",
                   "HERALD_SOCKETIO_CHANNEL": channel}, world.system.log_dir)
    web.start()
    try:
        yield web
    finally:
        web.stop()


def test_a_patch_body_over_64kib_is_refused_413(world: World) -> None:
    body = json.dumps({"status": "x" * (64 * 1024)})
    response = world.api.request("PATCH", f"/api/projects/{world.project}", world.token("admin"),
                                 content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "too_large"


def test_the_batch_publish_still_takes_a_1000_event_batch_of_megabytes(world: World) -> None:
    stream = f"ticket-{world.fresh_ticket()}"
    batch = [{"stream": stream, "type": "bulk", "data": {"n": i, "pad": "x" * 2000}}
             for i in range(1000)]
    response = world.api.request("POST", "/api/events", world.token("service"), json=batch,
                                 timeout=60)
    assert response.status_code == 201, response.text[:300]
    assert [e["offset"] for e in response.json()] == list(range(1, 1001))


def test_a_longest_chat_message_fits_its_route_even_escaped(world: World) -> None:
    # 10,000 characters outside the BMP, written \\ud83d\\ude00 each: ~120 KB of JSON
    body = json.dumps({"message": "\U0001F600" * 10_000}, ensure_ascii=True)
    assert len(body) > 64 * 1024
    response = world.api.request("POST", f"/api/tickets/{world.ticket}/messages",
                                 world.token("client"), content=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text[:300]


def test_a_users_http_writes_past_the_rate_get_429_and_others_go_on(
        world: World, strict: WebNode) -> None:
    path = f"/api/tickets/{world.ticket}"
    with httpx.Client(base_url=strict.url, timeout=30) as http:
        def patch(role: str) -> httpx.Response:
            return http.patch(path, json={"priority": "high"},
                              headers={"Authorization": f"Bearer {world.token(role)}"})

        statuses = [patch("technician").status_code for _ in range(5)]
        refused = patch("technician")
        assert statuses == [200] * 5
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) > 0
        assert http.get(f"/api/tickets/{world.ticket}/messages",
                        headers={"Authorization": f"Bearer {world.token('technician')}"}
                        ).status_code == 200  # reads are not writes
        assert patch("admin").status_code == 200  # another user


@pytest.mark.anyio
async def test_a_flood_of_readyz_and_metrics_reads_the_database_about_once(
        world: World, redis_url: str) -> None:
    api = create_app(Settings(database_url=world.system.database_url, redis_url=redis_url))
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(api.herald.engine, "before_cursor_execute", count)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api),
                                     base_url="http://herald") as http:
            assert (await http.get("/metrics")).status_code == 200
            one_scrape = len(statements)
            assert one_scrape > 0
            for path, once in (("/metrics", one_scrape), ("/readyz", 1)):
                before = len(statements)
                answers = await asyncio.gather(*(http.get(path) for _ in range(50)))
                assert {a.status_code for a in answers} == {200}
                # a refresh at most (the answer is a second old at most), not one per request
                assert len(statements) - before <= once, statements[before:]
    finally:
        api.herald.close()
