"""What the browser tests check on the server side: stream heads, the relay, sockets."""

from __future__ import annotations

import contextlib
import time

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


def expect_log(tab: PortalPage, stream: str, after: int, count: int,
               timeout: float = 15, settle: float = 0.3) -> None:
    """The page was handed exactly the `count` events of `stream` after offset `after`, in
    order (none lost, none twice): waits for them, then a moment more for any repeat."""
    want = [(stream, offset) for offset in range(after + 1, after + count + 1)]
    with contextlib.suppress(AssertionError):  # judged below, by what arrived
        eventually(lambda: len(tab.received(stream)) >= len(want), "", timeout)
    time.sleep(settle)
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
