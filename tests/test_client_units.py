"""herald_client's pure parts (bookkeeping, storage, errors), and its reaction to a server-side
disconnect, against an in-process python-socketio server (Herald itself never sends one on
purpose, so a small real Socket.IO server stands in)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp import web
from herald_client import FileStore, Position, Subscriber
from herald_client.errors import (
    AuthError,
    Forbidden,
    RateLimited,
    ServerError,
    error_from_ack,
    error_from_body,
)
from herald_client.tracker import Tracker, Verdict
from herald_client.types import Meta

from testkit.eventually import eventually_async
from testkit.processes import free_port


def meta(stream: str, offset: int, epoch: str = "e1") -> Meta:
    return Meta(f"id-{stream}-{offset}", stream, offset, epoch, "2026-01-01T00:00:00Z")


def test_next_offset_is_delivered_older_ones_are_duplicates_and_a_skip_is_a_gap() -> None:
    tracker = Tracker({"user-1": Position(4, "e1")})
    assert tracker.classify(meta("user-1", 5)) is Verdict.DELIVER
    assert tracker.classify(meta("user-1", 4)) is Verdict.DUPLICATE
    assert tracker.classify(meta("user-1", 1)) is Verdict.DUPLICATE
    assert tracker.classify(meta("user-1", 7)) is Verdict.GAP
    assert tracker.classify(meta("user-1", 5, "e2")) is Verdict.RESET
    tracker.advance(meta("user-1", 5))
    assert tracker.classify(meta("user-1", 5)) is Verdict.DUPLICATE


def test_a_position_without_epoch_accepts_any_epoch_and_learns_it_when_recovered() -> None:
    tracker = Tracker({"project-1": Position(2, None)})
    assert tracker.classify(meta("project-1", 3, "e9")) is Verdict.DELIVER
    assert tracker.seed("project-1", Position(10, "e9"), recovered=True) is False
    assert tracker.seen["project-1"] == Position(2, "e9")  # kept: 3..10 are being replayed


def test_a_head_seeds_only_new_or_unrecovered_streams() -> None:
    tracker = Tracker({"user-1": Position(3, "e1"), "clients": Position(5, "e1")})
    assert tracker.seed("user-1", Position(9, "e1"), recovered=True) is False
    assert tracker.seen["user-1"] == Position(3, "e1")  # never past what is being replayed
    assert tracker.seed("clients", Position(2, "e2"), recovered=False) is True  # a reset
    assert tracker.seen["clients"] == Position(2, "e2")
    assert tracker.seed("ticket-4", Position(7, "e1"), recovered=None) is False
    assert tracker.seen["ticket-4"] == Position(7, "e1")


def test_a_left_stream_is_ignored_and_not_sent_on_reconnect() -> None:
    tracker = Tracker({"project-1": Position(3, "e1")})
    tracker.leave("project-1")
    assert tracker.classify(meta("project-1", 4)) is Verdict.IGNORE
    assert tracker.auth_positions() == {}


def test_file_store_round_trips_and_treats_a_corrupt_file_as_empty(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "p.json")
    assert store.load() == {}
    store.save({"user-1": Position(3, "e1"), "project-2": Position(0, None)})
    assert FileStore(tmp_path / "p.json").load() == {
        "user-1": Position(3, "e1"), "project-2": Position(0, None)}
    (tmp_path / "p.json").write_text("{not json")
    assert store.load() == {}


def test_http_answers_and_error_acks_map_to_one_error_tree() -> None:
    forbidden = error_from_body(403, {"error": {"code": "forbidden", "message": "no"}})
    assert isinstance(forbidden, Forbidden)
    assert (forbidden.status, forbidden.code) == (403, "forbidden")
    limited = error_from_body(429, {"error": {"code": "rate_limited", "message": "slow"}}, 2.5)
    assert isinstance(limited, RateLimited) and limited.retry_after == 2.5
    assert isinstance(error_from_body(503, None), ServerError)
    expired = error_from_ack({"code": "token_expired", "message": "expired"})
    assert isinstance(expired, AuthError) and expired.code == "token_expired"
    ack_limited = error_from_ack({"code": "rate_limited", "message": "m", "retryAfter": 3})
    assert isinstance(ack_limited, RateLimited) and ack_limited.retry_after == 3


@pytest.mark.anyio
async def test_a_server_side_disconnect_is_followed_by_a_reconnect_with_positions() -> None:
    server = socketio.AsyncServer(async_mode="aiohttp")
    auths: list[Any] = []

    @server.event  # type: ignore[misc]
    async def connect(sid: str, environ: Any, auth: Any) -> None:
        auths.append(auth)

        async def greet() -> None:
            await asyncio.sleep(0.05)
            await server.emit("connected", {"userId": 1, "recovered": {},
                                            "positions": {"user-1": {"offset": 0,
                                                                     "epoch": "e1"}}}, to=sid)
            if len(auths) == 1:
                await server.emit("notification", ({"title": "one"}, meta("user-1", 1)
                                                   .to_dict()), to=sid)
        server.start_background_task(greet)

    app = web.Application()
    server.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    sub = Subscriber(f"http://127.0.0.1:{port}", get_token=lambda: "t")
    try:
        await sub.start()
        first = await asyncio.wait_for(sub.__anext__(), 10)
        assert first.meta == meta("user-1", 1)
        sid = next(iter(server.manager.get_participants("/", None)))[0]
        await server.disconnect(sid)  # final for python-socketio's own reconnection
        await eventually_async(lambda: len(auths) >= 2,
                               "no reconnect after a server-side disconnect", 15)
        assert auths[1] == {"token": "t", "positions": {"user-1": {"offset": 1, "epoch": "e1"}}}
    finally:
        await sub.close()
        await runner.cleanup()
