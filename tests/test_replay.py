"""Replay on (re)connect and on join: exactly what was missed, in order, then live."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, text

from app.core.db import utcnow
from app.core.errors import Gone
from app.gateway.manager import HeraldRedisManager
from app.outbox.replay import REPLAY_BATCH, iter_after, read_after
from app.outbox.retention import prune_events
from app.outbox.tables import RelayCursor, Stream
from app.outbox.writer import append
from testkit.clients import Received, SocketClient
from testkit.databases import Database
from testkit.eventually import eventually, eventually_async
from testkit.system import System, relay_nudger

pytestmark = pytest.mark.anyio


def offsets(events: list[Received], stream: str) -> list[int]:
    return [e.meta["offset"] for e in events if e.meta and e.meta.get("stream") == stream]


def position(event: Received) -> dict[str, Any]:
    assert event.meta is not None
    return {"offset": event.meta["offset"], "epoch": event.meta["epoch"]}


def head_of(system: System, stream: str) -> tuple[int, str]:
    with system.factory() as session:
        row = session.get(Stream, stream)
        assert row is not None
        return int(row.head), row.epoch


def wait_dispatched(system: System, streams: list[str], timeout: float = 30) -> None:
    """Until the relay has published every event of these streams."""
    def caught_up() -> bool:
        with system.factory() as session:
            return session.execute(
                select(func.count()).select_from(Stream)
                .join(RelayCursor, RelayCursor.stream == Stream.name)
                .where(Stream.name.in_(streams), RelayCursor.dispatched < Stream.head)
            ).scalar() == 0

    eventually(caught_up, f"relay did not catch up on {streams}", timeout)


def emit(system: System, stream: str, count: int, start: int = 0) -> None:
    """Append `count` ticket-updated style events in one transaction (the sweep relays them)."""
    with system.factory() as session, session.begin():
        for i in range(start, start + count):
            append(session, stream, "notification",
                   {"type": "info", "title": f"t{i}", "message": f"m{i}"})


async def test_reconnect_to_another_node_replays_exactly_the_missed_events_then_live(
    pg_system: System,
) -> None:
    other = pg_system.add_web()
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    first = SocketClient(pg_system.url, client_token)
    try:
        await first.connect()
        assert (await first.call("join-project", project))["ok"] is True
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 1})
        [seen] = await first.wait_count("project-updated", 1)
    finally:
        await first.close()

    missed = 15
    for progress in range(2, 2 + missed):
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})

    second = SocketClient(other.url, client_token, positions={stream: position(seen)})
    await second.connect()
    try:
        [connected] = await second.wait_count("connected", 1)
        assert second.events[0].name == "connected"
        assert connected.payload["recovered"] == {stream: True}
        replayed = await second.wait_count("project-updated", missed)
        assert offsets(replayed, stream) == list(range(2, 2 + missed))
        assert [e.payload["progress"] for e in replayed] == list(range(2, 2 + missed))

        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 99})  # room restored
        updates = await second.wait_count("project-updated", missed + 1)
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 100})  # sentinel
        await second.wait_for(lambda: 3 + missed in offsets(second.events, stream))
        updates = second.named("project-updated")  # a lagging relay's duplicate is in
        assert offsets(updates, stream) == list(range(2, 4 + missed))
        assert updates[-2].payload["progress"] == 99
    finally:
        await second.close()


async def test_connected_reports_the_head_of_every_joined_stream_and_delivers_what_follows(
    pg_system: System,
) -> None:
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    api.ok("PATCH", f"/api/projects/{project}", json={"progress": 5})  # user stream: notified
    stream, own = f"project-{project}", f"user-{client_id}"
    wait_dispatched(pg_system, [stream, own])
    client = SocketClient(pg_system.url, client_token,
                          positions={stream: {"offset": 0, "epoch": head_of(pg_system,
                                                                            stream)[1]}})
    await client.connect()
    try:
        [connected] = await client.wait_count("connected", 1)
        heads = connected.payload["positions"]
        assert set(heads) == {own, "clients", stream}
        for name in heads:
            offset, epoch = head_of(pg_system, name)
            assert heads[name] == {"offset": offset, "epoch": epoch}
        assert heads[own]["offset"] == 1
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 6})
        [note] = await client.wait_count("notification", 1)
        assert note.meta is not None and note.meta["offset"] == heads[own]["offset"] + 1
    finally:
        await client.close()


async def test_join_with_a_position_acks_after_the_replay(pg_system: System) -> None:
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    ticket = api.ticket(project)
    me = {"userId": client_id, "name": "client", "role": "client"}  # the ack's presence
    for kind, ident, key in (("project", project, "projectId"), ("ticket", ticket, "ticketId")):
        stream = f"{kind}-{ident}"
        emit(pg_system, stream, 4)
        head, epoch = head_of(pg_system, stream)
        socket = SocketClient(pg_system.url, client_token)
        await socket.connect()
        try:
            await socket.wait_count("connected", 1)
            ack = await socket.call(f"join-{kind}",
                                    {key: ident, "position": {"offset": 1, "epoch": epoch}})
            assert ack == {"ok": True, "stream": stream, "offset": head, "epoch": epoch,
                           "recovered": True, "presence": [me]}
            # the replay was sent before the ack
            assert offsets(socket.events, stream) == [2, 3, 4]
            emit(pg_system, stream, 1, start=4)
            await socket.wait_for(lambda s=stream, c=socket: offsets(c.events, s) == [2, 3, 4, 5])
        finally:
            await socket.close()


async def test_join_without_a_position_replays_nothing_and_reports_the_head(
    pg_system: System,
) -> None:
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    emit(pg_system, stream, 3)
    _, epoch = head_of(pg_system, stream)
    socket = SocketClient(pg_system.url, client_token)
    await socket.connect()
    try:
        ack = await socket.call("join-project", project)
        assert ack == {"ok": True, "stream": stream, "offset": 3, "epoch": epoch,
                       "recovered": False,
                       "presence": [{"userId": client_id, "name": "client", "role": "client"}]}
        emit(pg_system, stream, 1, start=3)
        await socket.wait_for(lambda: offsets(socket.events, stream) == [4])
    finally:
        await socket.close()


async def test_wrong_epoch_or_pruned_offset_is_not_recovered_on_connect_and_on_join(
    pg_system: System,
) -> None:
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    other_project = api.project(client_id)
    pruned, kept = f"project-{project}", f"project-{other_project}"
    emit(pg_system, pruned, 5)
    emit(pg_system, kept, 2)
    wait_dispatched(pg_system, [pruned, kept])
    with pg_system.factory() as session, session.begin():  # pruned's first 3 events are old
        session.execute(text("UPDATE events SET created_at = :old WHERE stream = :s "
                             "AND \"offset\" <= 3"),
                        {"old": utcnow() - timedelta(days=30), "s": pruned})
    assert prune_events(pg_system.factory, retention=timedelta(days=7)) == 3
    _, pruned_epoch = head_of(pg_system, pruned)
    _, kept_epoch = head_of(pg_system, kept)

    positions = {pruned: {"offset": 1, "epoch": pruned_epoch},
                 kept: {"offset": 0, "epoch": "not-the-epoch"}}
    socket = SocketClient(pg_system.url, client_token, positions=positions)
    await socket.connect()
    try:
        [connected] = await socket.wait_count("connected", 1)
        assert connected.payload["recovered"] == {pruned: False, kept: False}
        # not recovered: no history is sent, but the rooms are joined for what comes next
        emit(pg_system, kept, 1, start=2)
        await socket.wait_for(lambda: offsets(socket.events, kept) == [3])
        assert offsets(socket.events, pruned) == []

        ack = await socket.call("join-project", {"projectId": project,
                                                 "position": {"offset": 2,
                                                              "epoch": pruned_epoch}})
        assert ack["ok"] is True and ack["recovered"] is False and ack["offset"] == 5
        ack = await socket.call("join-project", {"projectId": project,
                                                 "position": {"offset": 3,
                                                              "epoch": pruned_epoch}})
        assert ack["recovered"] is True and offsets(socket.events, pruned) == [4, 5]
        ack = await socket.call("join-project", {"projectId": other_project,
                                                 "position": {"offset": 0, "epoch": "nope"}})
        assert ack["recovered"] is False and ack["epoch"] == kept_epoch
    finally:
        await socket.close()


async def test_unreadable_stream_or_malformed_position_is_not_recovered(
    pg_system: System,
) -> None:
    api = pg_system.api()
    owner_id, owner_token = api.user("client")
    outsider_id, outsider_token = api.user("client")
    project = api.project(owner_id)
    stream = f"project-{project}"
    emit(pg_system, stream, 2)
    _, epoch = head_of(pg_system, stream)
    own = f"user-{outsider_id}"
    outsider = SocketClient(pg_system.url, outsider_token,
                            positions={stream: {"offset": 0, "epoch": epoch},
                                       "user-999999": {"offset": 0},
                                       own: {"offset": "nonsense"}, "bogus": {"offset": 0}})
    owner = SocketClient(pg_system.url, owner_token, positions={stream: {"offset": 2}})
    await outsider.connect()
    await owner.connect()
    try:
        [connected] = await outsider.wait_count("connected", 1)
        assert connected.payload["recovered"] == {stream: False, "user-999999": False,
                                                  own: False}
        await owner.wait_count("connected", 1)
        emit(pg_system, stream, 1, start=2)
        await owner.wait_for(lambda: offsets(owner.events, stream) == [3])
        assert offsets(outsider.events, stream) == []
        assert outsider.sio.connected
    finally:
        await outsider.close()
        await owner.close()


async def test_replay_under_live_load_delivers_every_offset_once_in_order(
    pg_system: System,
) -> None:
    """Events keep committing while clients replay (connect and join): no gap, no reorder."""
    admin_token = pg_system.admin_token
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    total = 250
    written = 0

    def writer() -> None:
        nonlocal written
        for i in range(total):
            with pg_system.factory() as session, session.begin():
                append(session, stream, "project-updated",
                       {"projectId": project, "progress": i % 100, "status": "active"},
                       nudge=relay_nudger())
            written = i + 1
            time.sleep(0.004)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        await eventually_async(lambda: written >= total // 4, "the writer stalled")
        by_connect = SocketClient(pg_system.url, admin_token, positions={stream: {"offset": 0}})
        await by_connect.connect()
        await eventually_async(lambda: written >= total // 2, "the writer stalled")
        by_join = SocketClient(pg_system.webs[0].url, client_token)
        await by_join.connect()
        ack = await by_join.call("join-project", {"projectId": project,
                                                  "position": {"offset": 0}})
        assert ack["ok"] is True and ack["recovered"] is True
        # A first join (no position) acks the head it started from: every later event,
        # including those committed during the join, reaches the socket after it.
        from_head = SocketClient(pg_system.webs[0].url, client_token)
        await from_head.connect()
        head_ack = await from_head.call("join-project", project)
        assert head_ack["ok"] is True
    finally:
        await asyncio.to_thread(thread.join)
    try:
        for socket in (by_connect, by_join):
            await socket.wait_for(lambda s=socket: len(offsets(s.events, stream)) >= total,
                                  timeout=60)
        await from_head.wait_for(lambda: total in offsets(from_head.events, stream), timeout=60)
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 1})  # sentinel: total+1
        for socket in (by_connect, by_join, from_head):  # a late duplicate would be before it
            await socket.wait_for(lambda s=socket: total + 1 in offsets(s.events, stream))
        for socket in (by_connect, by_join):
            assert offsets(socket.events, stream) == list(range(1, total + 2))
        assert offsets(from_head.events, stream) == list(range(head_ack["offset"] + 1,
                                                               total + 2))
    finally:
        await by_connect.close()
        await by_join.close()
        await from_head.close()


def test_replay_reads_a_range_of_the_stream_offset_index(pg_db: Database) -> None:
    """Replay cost follows what was missed: an index range scan, never a table scan."""
    with pg_db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO streams (name, epoch, head, pruned_through, created_at) "
            "SELECT 'ticket-' || s, 'e', 1000, 0, now() FROM generate_series(1, 40) s"))
        conn.execute(text(
            "INSERT INTO events (id, stream, \"offset\", type, payload, created_at) "
            "SELECT gen_random_uuid()::text, 'ticket-' || s, o, 'ticket-updated', "
            "'{}'::json, now() FROM generate_series(1, 40) s, generate_series(1, 1000) o"))
        conn.execute(text("ANALYZE events"))
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM events" in statement:
            seen.append((statement, parameters))

    sa_event.listen(pg_db.engine, "before_cursor_execute", capture)
    try:
        with pg_db.factory() as session:
            read_after(session, "ticket-7", 500, limit=REPLAY_BATCH, epoch="e")
    finally:
        sa_event.remove(pg_db.engine, "before_cursor_execute", capture)
    [(statement, parameters)] = seen  # the very statement replay runs, explained
    with pg_db.engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters))
    assert "uq_events_stream_offset" in plan, plan
    assert "Seq Scan" not in plan, plan

    batches = list(iter_after(pg_db.factory, "ticket-7", 500, "e", batch=200))
    assert [len(b) for b in batches] == [200, 200, 100]
    assert [e.offset for b in batches for e in b] == list(range(501, 1001))



async def test_concurrent_replays_of_one_stream_on_one_socket_do_not_interleave(
    pg_system: System,
) -> None:
    """A client that restores a room on connect and joins it again at once (or twice)."""
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    emit(pg_system, stream, 600)  # more than one replay batch
    socket = SocketClient(pg_system.url, client_token, positions={stream: {"offset": 0}})
    await socket.connect()
    try:
        join = {"projectId": project, "position": {"offset": 100}}
        acks = await asyncio.gather(socket.call("join-project", join),
                                    socket.call("join-project", join))
        assert all(ack["ok"] and ack["recovered"] and ack["offset"] == 600 for ack in acks)
        await socket.wait_for(lambda: len(offsets(socket.events, stream)) >= 600 + 2 * 500)
        got = offsets(socket.events, stream)
        assert got == [*range(1, 601), *range(101, 601), *range(101, 601)]
    finally:
        await socket.close()


def test_a_replay_that_meets_a_pruned_range_is_gone_not_skipped(pg_db: Database) -> None:
    with pg_db.factory() as session, session.begin():
        for i in range(6):
            append(session, "project-1", "notification",
                   {"type": "info", "title": str(i), "message": ""})
    batches = iter_after(pg_db.factory, "project-1", 0, "e", batch=2)
    assert [e.offset for e in next(batches)] == [1, 2]
    with pg_db.factory() as session, session.begin():  # retention strikes mid-replay
        session.execute(text("DELETE FROM events WHERE \"offset\" <= 4"))
    with pytest.raises(Gone):
        next(batches)


async def test_a_replay_that_cannot_finish_drops_the_socket_or_refuses_the_join(
    pg_system: System,
) -> None:
    """History vanishing under a replay (retention racing it) never leaves a silent gap."""
    api = pg_system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"
    emit(pg_system, stream, 5)
    wait_dispatched(pg_system, [stream])
    with pg_system.factory() as session, session.begin():
        # as if retention deleted them right after the head was read: pruned_through lags
        session.execute(text("DELETE FROM events WHERE stream = :s AND \"offset\" <= 3"),
                        {"s": stream})
    _, epoch = head_of(pg_system, stream)

    socket = SocketClient(pg_system.url, client_token,
                          positions={stream: {"offset": 0, "epoch": epoch}})
    await socket.connect()
    try:
        await socket.wait_for(lambda: not socket.sio.connected)
        assert offsets(socket.events, stream) == []
    finally:
        await socket.close()

    socket = SocketClient(pg_system.url, client_token)
    await socket.connect()
    try:
        ack = await socket.call("join-project", {"projectId": project,
                                                 "position": {"offset": 1, "epoch": epoch}})
        assert ack["ok"] is False and ack["error"]["code"] == "gone"
        assert offsets(socket.events, stream) == []
        emit(pg_system, stream, 1, start=5)  # not in the room: the gap is not papered over
        ack = await socket.call("join-project", {"projectId": project,
                                                 "position": {"offset": 3, "epoch": epoch}})
        assert ack["ok"] is True and ack["recovered"] is True
        await socket.wait_for(lambda: offsets(socket.events, stream) == [4, 5, 6])
        assert socket.sio.connected
    finally:
        await socket.close()


def test_the_manager_holds_back_what_its_ordering_names_and_forgets_marks_of_empty_rooms(
) -> None:
    """The manager's wiring of app/gateway/ordering.py (the model alone: test_ordering.py):
    a gate closes on a floor only for a connected socket; emptied rooms lose their marks."""
    manager = HeraldRedisManager("redis://127.0.0.1:1/0", channel="unused")
    manager.rooms = {"/": {None: {"a": "ea"}, "s": {"a": "ea"}}}
    connected = {"a"}
    manager.is_connected = lambda sid, namespace: sid in connected  # no server here
    manager.open_gate("a", "s")
    manager.close_gate("a", "s", floor=6)
    assert manager.ordering.on_live("s", 6, "e", [{}]) == ["a"]  # the floor holds
    connected.clear()
    manager.open_gate("a", "s")
    manager.close_gate("a", "s", floor=6)  # gone meanwhile: no floor
    assert manager.ordering.on_live("s", 6, "e", [{}]) == []
    manager.ordering.note_sent("a", "s", 5)
    assert manager.stream_rooms() == {"s": ["a"]} and manager.ordering.mark("s") == 5
    del manager.rooms["/"]["s"]
    assert manager.stream_rooms() == {} and manager.ordering.mark("s") is None
