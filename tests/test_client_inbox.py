"""herald_client's inbox and per-type callbacks against a real Herald (PostgreSQL, two web
nodes, a Celery worker)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from herald_client import MemoryStore, NotFound, Subscriber

from app.outbox.writer import append
from testkit.eventually import eventually_async
from testkit.system import System

pytestmark = pytest.mark.anyio


def notify(system: System, stream: str, title: str) -> str:
    with system.factory() as session, session.begin():
        return append(session, stream, "notification",
                      {"type": "info", "title": title, "message": "m"}).id


async def test_two_subscribers_of_a_user_converge_through_inbox_updated_and_callbacks_fire(
        pg_system: System) -> None:
    second = pg_system.add_web()
    api = pg_system.api()
    uid, tok = api.user("client")
    _other, _ = api.user("client")
    subs = [Subscriber(url, get_token=lambda: tok, storage=MemoryStore())
            for url in (pg_system.url, second.url)]
    changes: list[list[tuple[dict[str, Any], dict[str, Any]]]] = [[], []]
    heard: list[tuple[str, int]] = []
    for i, sub in enumerate(subs):
        sub.inbox.on_change(lambda counts, change, i=i: changes[i].append((counts, change)))
    subs[0].on_notification(lambda payload, meta: heard.append((payload["title"], meta.offset)))
    for sub in subs:
        await sub.start()
    runners = [asyncio.create_task(sub.run()) for sub in subs]
    try:
        page = await subs[0].inbox.list()
        assert page["items"] == [] and subs[0].inbox.counts == {
            "unread": 0, "unseen": 0, "countsCapped": False}
        await subs[1].inbox.list()
        ids = [notify(pg_system, f"user-{uid}", f"n{i}") for i in range(3)]
        await eventually_async(lambda: len(heard) == 3)
        assert [title for title, _ in heard] == ["n0", "n1", "n2"]
        await eventually_async(lambda: all(len(c) >= 3 for c in changes))
        assert subs[0].inbox.counts == {"unread": 3, "unseen": 3, "countsCapped": False}

        assert await subs[0].inbox.mark_read(ids[:1]) == {
            "unread": 2, "unseen": 2, "countsCapped": False}
        await subs[1].inbox.archive(ids[1:2])
        await subs[1].inbox.mark_all_seen()
        with pytest.raises(NotFound):
            await subs[0].inbox.mark_read([str(uuid.uuid4())])  # no such item
        await eventually_async(lambda: all(len(c) >= 6 for c in changes))
        final = {"unread": 1, "unseen": 0, "countsCapped": False}
        assert subs[0].inbox.counts == subs[1].inbox.counts == final
        assert [c[1].get("all") for c in changes[0][3:]] == [None, None, "seen"]
        listed = await subs[1].inbox.list(state="unread")
        assert [i["id"] for i in listed["items"]] == [ids[2]] and listed["counts"] == final
    finally:
        for sub in subs:
            await sub.close()
        for runner in runners:
            await asyncio.wait_for(runner, 10)
