"""herald_client.Subscriber against a real Herald: resume, gap repair, reset, token refresh."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from herald_client import (
    AuthError,
    FileStore,
    Forbidden,
    HeraldError,
    History,
    MemoryStore,
    Position,
    Subscriber,
)
from herald_client.types import Event
from sqlalchemy import update

from app.outbox.tables import RelayCursor, Stream
from app.outbox.writer import append
from testkit.clients import token
from testkit.eventually import eventually_async
from testkit.processes import WebNode
from testkit.system import System

pytestmark = pytest.mark.anyio


def emit(system: System, stream: str, title: str) -> None:
    """One notification on `stream`, committed here; the worker's sweep relays it."""
    with system.factory() as session, session.begin():
        append(session, stream, "notification", {"type": "info", "title": title, "message": "m"})


def head(system: System, stream: str) -> Position:
    with system.factory() as session:
        row = session.get(Stream, stream)
        assert row is not None
        return Position(int(row.head), row.epoch)


class Collector:
    """Runs `async for` over a subscriber in a task, keeping what it yields."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.events: list[Event] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.sub:
            self.events.append(event)

    def offsets(self, stream: str) -> list[int]:
        return [e.meta.offset for e in self.events if e.meta and e.meta.stream == stream]

    async def wait_for(self, what: Callable[[], bool], timeout: float = 30) -> None:
        def done() -> bool:
            if what():
                return True
            if self.task.done():
                self.task.result()
                raise AssertionError("the subscriber's iterator ended")
            return False

        await eventually_async(done, lambda: f"timed out; have {self.events[-5:]}", timeout)

    async def close(self) -> None:
        await self.sub.close()
        await asyncio.wait_for(self.task, 10)


async def test_resumes_across_a_web_node_crash_with_no_loss_and_no_duplicate(
    pg_system: System, node: WebNode, tmp_path: Path
) -> None:
    api = pg_system.api()
    user_id, user_token = api.user("client")
    project = api.project(user_id)
    streams = [f"user-{user_id}", f"project-{project}"]  # automatic, and joined by the client
    changes: list[bool] = []
    sub = Subscriber(node.url, get_token=lambda: user_token, on_connection_change=changes.append)
    await sub.start()
    await sub.join_project(project)
    got = Collector(sub)
    stop = threading.Event()
    written: dict[str, int] = dict.fromkeys(streams, 0)

    def writer() -> None:  # events keep being written before, during and after the crash
        while not stop.is_set():
            for stream in streams:
                emit(pg_system, stream, f"n{written[stream]}")
                written[stream] += 1
            time.sleep(0.03)

    thread = threading.Thread(target=writer, daemon=True)
    try:
        thread.start()
        await got.wait_for(lambda: all(len(got.offsets(s)) >= 5 for s in streams))
        node.kill()
        await got.wait_for(lambda: False in changes)  # the client saw the crash
        restarted = WebNode(pg_system.env, tmp_path, port=node.port)
        await asyncio.to_thread(restarted.start)
        node.proc = restarted.proc
        await got.wait_for(lambda: False in changes and changes[-1] is True)
        back = dict(written)  # events written after the reconnect arrive live
        await got.wait_for(lambda: all(len(got.offsets(s)) > back[s] for s in streams))
        stop.set()
        await asyncio.to_thread(thread.join, 10)
        for stream in streams:  # a sentinel each, behind any duplicate of the stream
            emit(pg_system, stream, f"n{written[stream]}")
            written[stream] += 1
        await got.wait_for(lambda: all(written[s] in got.offsets(s) for s in streams))
        for stream in streams:
            assert got.offsets(stream) == list(range(1, written[stream] + 1))
            assert [e.payload["title"] for e in got.events if e.meta and e.meta.stream == stream] \
                == [f"n{i}" for i in range(written[stream])]
    finally:
        stop.set()
        await got.close()


async def test_a_new_process_resumes_from_the_positions_in_its_file(
    pg_system: System, tmp_path: Path
) -> None:
    user_id, user_token = pg_system.api().user("client")
    stream = f"user-{user_id}"
    store = FileStore(tmp_path / "positions.json")
    first = Collector(Subscriber(pg_system.url, get_token=lambda: user_token, storage=store))
    await first.sub.start()
    emit(pg_system, stream, "a")
    emit(pg_system, stream, "b")
    await first.wait_for(lambda: first.offsets(stream) == [1, 2])
    await first.close()
    emit(pg_system, stream, "c")  # written while no process runs
    assert store.load()[stream] == Position(2, head(pg_system, stream).epoch)

    second = Collector(Subscriber(pg_system.url, get_token=lambda: user_token, storage=store))
    await second.sub.start()
    try:
        await second.wait_for(lambda: second.offsets(stream) == [3])
        emit(pg_system, stream, "d")
        await second.wait_for(lambda: second.offsets(stream) == [3, 4])
    finally:
        await second.close()


class RecordingHistory(History):
    """The real HTTP history, recording which ranges were asked for."""

    asked: list[tuple[str, int]]

    async def page(self, stream: str, after: int, limit: int = 1000
                   ) -> tuple[list[Event], Position]:
        self.asked.append((stream, after))
        return await super().page(stream, after, limit)


async def test_an_event_never_published_live_is_fetched_over_http_before_the_next(
    pg_system: System
) -> None:
    user_id, user_token = pg_system.api().user("client")
    stream = f"user-{user_id}"

    async def get_token(fresh: bool = False) -> str:
        return user_token

    history = RecordingHistory(pg_system.url, get_token)
    history.asked = []
    changes: list[bool] = []
    got = Collector(Subscriber(pg_system.url, get_token=get_token, history=history,
                               on_connection_change=changes.append))
    await got.sub.start()
    try:
        emit(pg_system, stream, "live-1")
        await got.wait_for(lambda: got.offsets(stream) == [1])
        # A lost pub/sub message: offset 2 is committed with the relay's cursor already past
        # it, in one transaction, so the relay never publishes it.
        with pg_system.factory() as session, session.begin():
            append(session, stream, "notification",
                   {"type": "info", "title": "lost-2", "message": "m"})
            session.execute(update(RelayCursor).where(RelayCursor.stream == stream)
                            .values(dispatched=2))
        emit(pg_system, stream, "live-3")
        emit(pg_system, stream, "sentinel-4")  # behind anything 1-3 would bring again
        await got.wait_for(lambda: 4 in got.offsets(stream))
        assert got.offsets(stream) == [1, 2, 3, 4]
        assert [e.payload["title"] for e in got.events] == [
            "live-1", "lost-2", "live-3", "sentinel-4"]
        assert history.asked == [(stream, 1)]
        assert changes == [True]  # repaired over HTTP, not by reconnecting
    finally:
        await got.close()


async def test_a_stored_position_of_another_epoch_calls_on_reset_with_the_head(
    pg_system: System
) -> None:
    user_id, user_token = pg_system.api().user("client")
    stream = f"user-{user_id}"
    emit(pg_system, stream, "old-1")
    emit(pg_system, stream, "old-2")
    real = head(pg_system, stream)
    resets: list[tuple[str, Position]] = []
    store = MemoryStore({stream: Position(1, "an-epoch-long-gone")})
    got = Collector(Subscriber(pg_system.url, get_token=lambda: user_token, storage=store,
                               on_reset=lambda s, h: resets.append((s, h))))
    await got.sub.start()
    try:
        await got.wait_for(lambda: bool(resets))
        assert resets == [(stream, real)]
        assert store.load()[stream] == real  # the head, saved at once
        emit(pg_system, stream, "new-3")
        await got.wait_for(lambda: got.offsets(stream) == [3])
    finally:
        await got.close()


async def test_a_join_with_a_position_of_another_epoch_calls_on_reset(pg_system: System) -> None:
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    api.ok("PATCH", f"/api/projects/{project}", json={"progress": 10})
    resets: list[tuple[str, Position]] = []
    sub = Subscriber(pg_system.url, get_token=lambda: client_token,
                     on_reset=lambda s, h: resets.append((s, h)))
    await sub.start()
    got = Collector(sub)
    try:
        await got.wait_for(lambda: sub.connected)
        sub.track(stream, Position(0, "an-epoch-long-gone"))
        await sub.join_project(project)
        await got.wait_for(lambda: bool(resets))
        assert resets == [(stream, head(pg_system, stream))]
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 20})
        await got.wait_for(lambda: got.offsets(stream) == [2])
    finally:
        await got.close()


async def test_an_expired_token_is_replaced_through_get_token_on_reconnect(
    pg_system: System, node: WebNode
) -> None:
    user_id, _ = pg_system.api().user("client")
    stream = f"user-{user_id}"
    short = token(user_id, "client", ttl=timedelta(seconds=2))
    calls: list[str] = []

    async def get_token() -> str:
        # the app's cache hands out the short token until the client asks again after
        # token_expired: the first two calls get it, then a fresh one
        calls.append("short" if len(calls) < 2 else "fresh")
        return short if len(calls) <= 2 else token(user_id, "client")

    changes: list[bool] = []
    got = Collector(Subscriber(node.url, get_token=get_token,
                               on_connection_change=changes.append))
    await got.sub.start()
    try:
        emit(pg_system, stream, "before")
        await got.wait_for(lambda: got.offsets(stream) == [1])
        # At the token's exp the server closes the open transport: the client reconnects
        # with the expired token first (refused: token_expired), then with a fresh one.
        await got.wait_for(lambda: False in changes, timeout=15)
        emit(pg_system, stream, "after-expiry")
        await got.wait_for(lambda: got.offsets(stream) == [1, 2])
        await got.wait_for(lambda: "fresh" in calls)
        emit(pg_system, stream, "after")
        await got.wait_for(lambda: got.offsets(stream) == [1, 2, 3])
        assert calls == ["short", "short", "fresh"]
    finally:
        await got.close()


@pytest.mark.parametrize(("kind", "error", "code"), [
    ("garbage", AuthError, "token_invalid"),
    ("expired", AuthError, "token_expired"),
    ("service", Forbidden, "forbidden"),
])
async def test_a_refused_connection_raises_its_typed_error_from_start(
    pg_system: System, kind: str, error: type[HeraldError], code: str
) -> None:
    tokens = {"garbage": "not-a-jwt",
              "expired": token(1, "client", ttl=timedelta(seconds=-10)),
              "service": token("billing", "service")}
    sub = Subscriber(pg_system.url, get_token=lambda: tokens[kind])
    with pytest.raises(error) as raised:
        await asyncio.wait_for(sub.start(), 30)
    assert raised.value.code == code
