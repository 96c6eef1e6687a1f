"""What the browser tests check on the server side: stream heads, the relay, sockets."""

from __future__ import annotations

import contextlib

from sqlalchemy import select

from app.portal.auth import Principal, decode
from testkit.eventually import eventually
from testkit.ops import scrape
from testkit.testrun import SECRET
from testkit.world import World
from tests.browser.conftest import PortalPage


def principal(world: World, role: str) -> Principal:
    return decode(world.token(role), secret=SECRET)


def head(world: World, stream: str) -> int:
    return int(world.api.ok("GET", f"/api/streams/{stream}/events?after=0&limit=1")
               ["head"]["offset"])


def wait_relayed(world: World, streams: list[str], timeout: float = 15) -> None:
    """Until the relay has published every event of `streams` (to no web node, if none runs)."""
    from app.outbox.tables import RelayCursor, Stream

    heads: dict[str, int] = {}
    sent: dict[str, int] = {}

    def relayed() -> bool:
        with world.system.factory() as session:
            heads.update(dict(session.execute(select(Stream.name, Stream.head)
                                              .where(Stream.name.in_(streams))).all()))
            sent.update(dict(session.execute(select(RelayCursor.stream, RelayCursor.dispatched)
                                             .where(RelayCursor.stream.in_(streams))).all()))
        return all(sent.get(name, 0) >= heads.get(name, 0) for name in streams)

    eventually(relayed, lambda: f"not relayed in {timeout}s: heads {heads}, dispatched {sent}",
               timeout)


# Events the browser tests expected a page to be handed, and how many of them were lost or
# came twice: printed at the end of the run (tests/browser/conftest.py).
TALLY = {"expected": 0, "lost": 0, "duplicated": 0}


def expect_log(world: World, tab: PortalPage, stream: str, after: int, count: int,
               timeout: float = 15) -> None:
    """The page was handed exactly the `count` events of `stream` after offset `after`, in
    order (none lost, none twice).

    Waits for them, then appends a marker to the stream (an event type no handler of the
    page shows) and waits until the page's client is past it: a client delivers a stream in
    order and drops whatever is at or before its position, so from then on nothing before
    the marker can be handed again, and what was handed is the whole log."""
    want = [(stream, offset) for offset in range(after + 1, after + count + 1)]
    with contextlib.suppress(AssertionError):  # judged below, by what arrived
        eventually(lambda: len(tab.received(stream)) >= len(want), "", timeout)
    marker = int(world.api.ok("POST", "/api/events", token=world.token("service"), json={
        "stream": stream, "type": "test-log-marker", "data": {}})["offset"])
    eventually(lambda: tab.position(stream) >= marker,
               lambda: f"the page never passed the marker {stream}:{marker}: handed "
               f"{tab.received(stream)}", timeout)
    got = tab.received(stream)
    TALLY["expected"] += len(want)
    TALLY["lost"] += len(set(want) - set(got))
    TALLY["duplicated"] += len(got) - len(set(got))
    assert got == want


def connected_sockets(world: World) -> int:
    """herald_connected_sockets of the web node, from its /metrics."""
    text = world.api.http.get("/metrics").text
    return int(sum(value for (name, _labels), value in scrape(text).items()
                   if name == "herald_connected_sockets"))
