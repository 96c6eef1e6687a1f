"""app.gateway.roster on a real Redis, with two in-process rosters standing for two web nodes
(emits recorded): the sweep of a dead node, and a live node that was swept writing its
members again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.gateway.roster import Member, Roster
from testkit.testrun import fresh_name

pytestmark = pytest.mark.anyio
ALICE = Member(1, "Alice", "client")


class Node:
    def __init__(self, redis_url: str, prefix: str, rooms: dict[str, set[str]]) -> None:
        self.emitted: list[tuple[str, dict[str, Any]]] = []
        self.rooms = rooms  # sid -> rooms, as the Socket.IO manager would say

        async def emit(event: str, payload: dict[str, Any], room: str,
                       skip_sid: str | None) -> None:
            self.emitted.append((event, payload))
        self.roster = Roster(redis_url, prefix=prefix, ttl=600, emit=emit,
                             in_room=lambda sid, room: room in self.rooms.get(sid, set()))
        # Only the beats a test makes: the background loop's first beat would race them
        # (a's beat could make it alive again, or sweep before b's). The loop itself runs in
        # tests/test_presence.py's real web nodes.
        self.roster._start = lambda: None  # type: ignore[method-assign]


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[list[Node]]:
    prefix = f"herald-roster:{{{fresh_name('roster')}}}"
    both = [Node(redis_url, prefix, {"a1": {"ticket-1"}}), Node(redis_url, prefix, {})]
    yield both
    for node in both:
        await node.roster.close()
        await node.roster.redis.aclose()


async def test_a_dead_nodes_members_are_swept_by_another_node(nodes: list[Node]) -> None:
    a, b = nodes
    await a.roster.enter("a1", ALICE, "ticket-1")
    await a.roster.beat()
    assert await b.roster.members("ticket-1") == [ALICE.to_dict()]
    await a.roster.redis.delete(a.roster._key("alive", a.roster.node))  # a stops beating
    assert await b.roster.members("ticket-1") == []  # reads skip a dead node at once
    await b.roster.beat()
    assert b.emitted == [("presence-leave", {"stream": "ticket-1", "userId": 1})]
    await b.roster.beat()  # swept once
    assert len(b.emitted) == 1


async def test_a_live_node_that_was_swept_writes_its_members_again(nodes: list[Node]) -> None:
    a, b = nodes
    await a.roster.enter("a1", ALICE, "ticket-1")
    await a.roster.beat()
    await a.roster.redis.delete(a.roster._key("alive", a.roster.node))  # a long pause
    await b.roster.beat()
    assert await b.roster.members("ticket-1") == []
    await a.roster.beat()  # a wakes up: still has Alice's socket
    assert await b.roster.members("ticket-1") == [ALICE.to_dict()]
    assert a.emitted[-1] == ("presence-join", {"stream": "ticket-1", "user": ALICE.to_dict()})


async def test_a_socket_taken_out_of_a_room_behind_the_rosters_back_leaves_at_the_next_beat(
        nodes: list[Node]) -> None:
    a, _ = nodes
    await a.roster.enter("a1", ALICE, "ticket-1")
    a.rooms["a1"].clear()  # a revocation applied by the manager
    await a.roster.beat()
    assert a.emitted[-1] == ("presence-leave", {"stream": "ticket-1", "userId": 1})
    assert await a.roster.members("ticket-1") == []
