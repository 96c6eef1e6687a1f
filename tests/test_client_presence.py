"""herald_client's `on_presence` against a real Herald (two web nodes): the list from the
join ack, kept current by presence-join/leave, and read over HTTP for a room restored at
connect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from herald_client import MemoryStore, Position, Subscriber

from testkit.eventually import eventually_async
from testkit.system import System

pytestmark = pytest.mark.anyio


async def until(what: Callable[[], bool], timeout: float = 20) -> None:
    await eventually_async(what, "timed out", timeout)


def names(lists: list[list[dict[str, Any]]]) -> list[str] | None:
    return [m["name"] for m in lists[-1]] if lists else None


async def test_on_presence_follows_who_is_in_a_ticket_across_nodes(pg_system: System) -> None:
    second = pg_system.add_web()
    api = pg_system.api()
    client_id, client_tok = api.user("client")
    tech_id, tech_tok = api.user("technician")
    ticket = api.ticket(api.project(client_id, [tech_id]))
    stream = f"ticket-{ticket}"
    client = Subscriber(pg_system.url, get_token=lambda: client_tok, storage=MemoryStore())
    tech_tabs = [Subscriber(url, get_token=lambda: tech_tok, storage=MemoryStore())
                 for url in (second.url, pg_system.url)]
    seen: list[list[dict[str, Any]]] = []
    client.on_presence(stream, seen.append)
    for sub in (client, *tech_tabs):
        await sub.start()
    try:
        await client.join_ticket(ticket)
        assert names(seen) == ["client"]
        await tech_tabs[0].join_ticket(ticket)
        await until(lambda: names(seen) == ["client", "technician"])
        assert seen[-1][1] == {"userId": tech_id, "name": "technician", "role": "technician"}
        await tech_tabs[1].join_ticket(ticket)  # a second tab: nobody new
        assert tech_tabs[1].presence.members(stream) == seen[-1]
        await tech_tabs[0].leave_ticket(ticket)  # one tab of two: still here
        assert tech_tabs[0].presence.members(stream) is None
        await tech_tabs[1].close()
        await until(lambda: names(seen) == ["client"])
        assert [names([s]) for s in seen] == [["client"], ["client", "technician"],
                                              ["client"]]
    finally:
        for sub in (client, *tech_tabs):
            await sub.close()


async def test_a_room_restored_at_connect_reads_its_members_over_http(pg_system: System
                                                                      ) -> None:
    api = pg_system.api()
    client_id, client_tok = api.user("client")
    tech_id, tech_tok = api.user("technician")
    project = api.project(client_id, [tech_id])
    stream = f"project-{project}"
    tech = Subscriber(pg_system.url, get_token=lambda: tech_tok, storage=MemoryStore())
    await tech.start()
    head = await tech.join_project(project)
    client = Subscriber(pg_system.url, get_token=lambda: client_tok, storage=MemoryStore())
    client.track(stream, Position(head.offset, head.epoch))
    seen: list[list[dict[str, Any]]] = []
    client.on_presence(stream, seen.append)
    try:
        await client.start()
        await until(lambda: names(seen) == ["client", "technician"])
    finally:
        await tech.close()
        await client.close()
