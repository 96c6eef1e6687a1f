"""Shared page reads for replays (app/gateway/replay.py, `PageReads`): one database read
for every socket replaying the same page at once, never a page too old for a reader.

A short page (fewer events than a batch) can miss what committed after its read; a reader
may take it only if the read began after the reader's gate opened (`since`). A full page
holds fixed offsets and is good for anyone.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sqlalchemy import text

from app.core.errors import Gone
from app.gateway import replay as replay_module
from app.gateway.ordering import Ordering
from app.gateway.replay import PageReads
from app.outbox.streams import project_stream
from app.outbox.writer import append
from app.portal import projects
from testkit.clients import SocketClient, token
from testkit.databases import Database
from testkit.eventually import eventually_async
from testkit.localnode import local_node
from testkit.system import System

pytestmark = pytest.mark.anyio
STREAM = "project-1"


def write(db: Database, count: int) -> None:
    with db.factory() as session, session.begin():
        for i in range(count):
            append(session, STREAM, "notification", {"type": "info", "title": str(i),
                                                      "message": ""})


def offsets(page: Any) -> list[int]:
    return [e.offset for e in page.events]


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_concurrent_readers_of_one_page_share_one_read(pg_db: Database) -> None:
    write(pg_db, 5)
    pages = PageReads(pg_db.factory)
    since = now()
    got = await asyncio.gather(*(pages.read(STREAM, 0, "e", since) for _ in range(50)))
    assert pages.reads == 1
    assert all(page is got[0] for page in got)
    assert offsets(got[0]) == [1, 2, 3, 4, 5] and not got[0].full


async def test_a_short_page_read_before_a_readers_gate_opened_is_read_again(
        pg_db: Database) -> None:
    write(pg_db, 3)
    pages = PageReads(pg_db.factory)
    early = now()
    assert offsets(await pages.read(STREAM, 0, "e", early)) == [1, 2, 3]
    write(pg_db, 2)  # committed after that read
    late = now()  # a reader whose gate opened after it
    assert offsets(await pages.read(STREAM, 0, "e", late)) == [1, 2, 3, 4, 5]
    assert pages.reads == 2
    # a reader whose gate opened before the second read began may take it
    assert offsets(await pages.read(STREAM, 0, "e", late)) == [1, 2, 3, 4, 5]
    assert pages.reads == 2


async def test_a_full_page_is_good_for_any_reader(pg_db: Database) -> None:
    write(pg_db, 3)
    pages = PageReads(pg_db.factory, batch=2)
    first = await pages.read(STREAM, 0, "e", now())
    assert offsets(first) == [1, 2] and first.full
    write(pg_db, 1)
    assert await pages.read(STREAM, 0, "e", now()) is first
    assert offsets(await pages.read(STREAM, 2, "e", now())) == [3, 4]
    assert pages.reads == 2


async def test_a_read_in_flight_begun_too_early_is_not_joined(
        pg_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reader A's read is in flight (held); 2 events commit; reader B (gate opened after
    A's read began) must not take A's page, reader C (gate opened before) may."""
    write(pg_db, 1)
    release = threading.Event()
    original = replay_module.read_after
    calls = 0

    def held_read(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            release.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(replay_module, "read_after", held_read)
    pages = PageReads(pg_db.factory)
    c_since = now()
    a = asyncio.create_task(pages.read(STREAM, 0, "e", now()))
    await eventually_async(lambda: calls == 1, "the first read did not start")
    c = asyncio.create_task(pages.read(STREAM, 0, "e", c_since))
    write(pg_db, 2)
    b = asyncio.create_task(pages.read(STREAM, 0, "e", now()))
    await asyncio.sleep(0.05)
    # The first read's transaction begins now (after the two commits): it sees all three.
    # What matters is that B waits for A and reads again rather than trusting A's page.
    release.set()
    page_a, page_b, page_c = await asyncio.gather(a, b, c)
    assert page_c is page_a
    assert page_b is not page_a and pages.reads == 2
    assert offsets(page_b) == [1, 2, 3]


async def test_a_gap_is_gone_and_no_page_is_kept(pg_db: Database) -> None:
    write(pg_db, 4)
    with pg_db.factory() as session, session.begin():  # retention pruned 1..2
        session.execute(text("DELETE FROM events WHERE \"offset\" <= 2"))
    pages = PageReads(pg_db.factory)
    with pytest.raises(Gone):
        await pages.read(STREAM, 0, "e", now())
    with pytest.raises(Gone):
        await pages.read(STREAM, 0, "e", now())
    assert pages.reads == 2
    assert offsets(await pages.read(STREAM, 2, "e", now())) == [3, 4]


async def test_kept_pages_expire_and_are_bounded(pg_db: Database) -> None:
    write(pg_db, 6)
    pages = PageReads(pg_db.factory, batch=1, keep=600, max_pages=3)
    for after in range(6):
        await pages.read(STREAM, after, "e", now())
    assert list(pages._kept) == [(STREAM, after, "e") for after in (3, 4, 5)]
    await pages.read(STREAM, 5, "e", 0.0)
    assert pages.reads == 6  # kept
    short = PageReads(pg_db.factory, batch=1, keep=0.05)
    await short.read(STREAM, 0, "e", 0.0)
    await asyncio.sleep(0.1)
    await short.read(STREAM, 1, "e", 0.0)  # a read after `keep` drops the expired page
    assert list(short._kept) == [(STREAM, 1, "e")]
    await short.read(STREAM, 0, "e", 0.0)
    assert short.reads == 3


class Subscriptions:
    def __init__(self) -> None:
        self.losses = 0
        self.live = True

    def is_live(self, room: str) -> bool:
        return self.live


class Gates:
    """The manager's gates over the real ordering model: the test says which live events
    arrive."""

    def __init__(self, stream: str = STREAM, max_packets: int = 5000) -> None:
        self.subscriptions = Subscriptions()
        self.ordering = Ordering(lambda room: (), max_packets=max_packets)
        self.stream = stream
        self.closed: list[str] = []

    def open_gate(self, sid: str, room: str) -> None:
        self.ordering.open_gate(sid, room)

    def close_gate(self, sid: str, room: str, floor: int | None = None) -> None:
        self.ordering.close_gate(sid, room, floor)
        self.closed.append(sid)

    def gated(self) -> set[str]:
        return self.ordering.sids()

    def arrive(self, *offsets: int) -> None:
        for o in offsets:
            self.ordering.on_live(self.stream, o, "notification", [{}, {"offset": o}])


async def test_a_short_page_with_its_tail_is_good_for_a_reader_whose_gate_opened_after_its_read(
        pg_db: Database) -> None:
    """The node received events 4 and 5 live after the page's read: a later reader takes
    the page and its tail instead of reading again; an event already in the page is not
    in the tail twice."""
    write(pg_db, 3)
    gates = Gates()
    pages = PageReads(pg_db.factory, gates=gates)
    page = await pages.read(STREAM, 0, "e", now())
    gates.arrive(3, 4, 5)  # 3: committed before the read, published after it
    assert await pages.read(STREAM, 0, "e", now()) is page
    assert pages.reads == 1
    assert page.tail is not None and [e.offset for e in page.tail.events] == [4, 5]


async def test_a_tail_with_a_hole_or_across_a_lost_subscription_is_not_trusted(
        pg_db: Database) -> None:
    write(pg_db, 3)
    gates = Gates()
    pages = PageReads(pg_db.factory, gates=gates)
    await pages.read(STREAM, 0, "e", now())
    gates.arrive(5)  # 4 never arrived
    assert offsets(await pages.read(STREAM, 0, "e", now())) == [1, 2, 3]
    assert pages.reads == 2 and len(gates.closed) == 1
    gates.subscriptions.losses += 1  # Redis lost: events may have passed unseen
    await pages.read(STREAM, 0, "e", now())
    assert pages.reads == 3 and len(gates.closed) == 2


async def test_a_tail_whose_gate_went_over_its_bound_is_not_trusted(pg_db: Database) -> None:
    """What a full gate dropped is a hole in the tail: the next reader reads again."""
    write(pg_db, 3)
    gates = Gates(max_packets=2)
    pages = PageReads(pg_db.factory, gates=gates)
    await pages.read(STREAM, 0, "e", now())
    gates.arrive(4, 5, 6)  # the third goes over the bound: the gate drops what it held
    assert offsets(await pages.read(STREAM, 0, "e", now())) == [1, 2, 3]
    assert pages.reads == 2 and len(gates.closed) == 1


async def test_a_short_page_whose_tail_has_not_reached_what_a_reader_needs_is_read_again(
        pg_db: Database) -> None:
    """Event 4 committed (in the reader's head) but not yet published to this node: the
    kept page 1..3 with an empty tail is not good for a reader needing 4, nor any reader
    needing 4 the tail has not reached; once 4 arrived live, it is."""
    write(pg_db, 3)
    gates = Gates()
    pages = PageReads(pg_db.factory, gates=gates)
    page = await pages.read(STREAM, 0, "e", now())
    write(pg_db, 1)
    assert await pages.read(STREAM, 0, "e", now(), 3) is page
    fresh = await pages.read(STREAM, 0, "e", now(), 4)
    assert offsets(fresh) == [1, 2, 3, 4] and pages.reads == 2
    write(pg_db, 1)
    gates.arrive(5)  # 5 committed and published after the second read
    assert await pages.read(STREAM, 0, "e", now(), 5) is fresh and pages.reads == 2


async def test_a_kept_pages_tail_closes_when_the_page_expires(pg_db: Database) -> None:
    write(pg_db, 1)
    gates = Gates()
    pages = PageReads(pg_db.factory, gates=gates, keep=0.05)
    await pages.read(STREAM, 0, "e", now())
    assert len(gates.gated()) == 1
    await asyncio.sleep(0.1)
    assert gates.gated() == set() and len(gates.closed) == 1


async def test_many_sockets_recovering_one_stream_at_once_get_every_event_in_order(
        pg_system: System) -> None:
    """A small reconnect storm: 30 sockets, one stream, 700 missed events (two pages),
    some from offset 0, some from 200: each gets exactly what it missed, in order."""
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    with pg_system.factory() as session, session.begin():
        for i in range(700):
            append(session, stream, "notification", {"type": "info", "title": str(i),
                                                     "message": ""})
    starts = [0 if i % 2 else 200 for i in range(30)]
    sockets = [SocketClient(pg_system.url, client_token,
                            positions={stream: {"offset": start}}) for start in starts]
    try:
        await asyncio.gather(*(s.connect() for s in sockets))

        def got(socket: SocketClient) -> list[int]:
            return [e.meta["offset"] for e in socket.events
                    if e.meta and e.meta.get("stream") == stream]

        for socket, start in zip(sockets, starts, strict=True):
            await socket.wait_for(lambda s=socket, n=700 - start: len(got(s)) >= n, timeout=30)
            assert got(socket) == list(range(start + 1, 701))
    finally:
        await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)


async def test_a_reconnect_whose_head_is_past_a_kept_pages_tail_is_not_gone(
        pg_system_session: System, redis_url: str) -> None:
    """An event committed but not yet published to this node (the relay lags) is in the
    head a reconnecting socket reads, not in a kept page's tail: that socket must not be
    told its events were pruned (closed, `Gone`), but get the event from a new read.

    Against the gateway in this process (its channel is its own: nothing this test does
    not publish reaches it), with real Socket.IO clients and one kept page."""
    with pg_system_session.factory() as session, session.begin():
        client = projects.create_user(session, email="kept-tail@test", role="client",
                                      name="c")
        project = projects.create_project(session, name="P", client_id=client.id,
                                          technician_ids=[])
        user, stream = client.id, project_stream(project.id)

    def note(count: int) -> None:
        with pg_system_session.factory() as session, session.begin():
            for i in range(count):
                append(session, stream, "note", {"i": i})

    def got(socket: SocketClient) -> list[int]:
        return [n.meta["offset"] for n in socket.named("note") if n.meta]

    await asyncio.to_thread(note, 3)
    async with local_node(pg_system_session, redis_url) as node:
        pages = node.gateway.replayer.pages
        pages.keep = 600.0  # the kept page outlives the test: no timing in it
        first, second = (SocketClient(node.url, token(user, "client"),
                                      positions={stream: {"offset": 0}}) for _ in range(2))
        try:
            await first.connect()  # reads the page 1..3 (not full), its tail opened before
            await first.wait_for(lambda: got(first) == [1, 2, 3])
            assert pages.reads == 1
            await asyncio.to_thread(note, 1)  # event 4: committed, never published here
            await second.connect()  # its head is 4; the kept page and its tail end at 3
            await second.wait_for(lambda: got(second) == [1, 2, 3, 4] or not
                                  second.sio.connected)
            assert got(second) == [1, 2, 3, 4] and second.sio.connected
            assert pages.reads == 2  # read again, not taken from the kept page
        finally:
            for socket in (first, second):
                await socket.close()
