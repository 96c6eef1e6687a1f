"""One user, several tabs, one connection; and a token that expires while the page is open."""

from __future__ import annotations

import contextlib

from playwright.sync_api import expect

from testkit.eventually import eventually
from testkit.world import World
from tests.browser.conftest import Portal
from tests.browser.streams import connected_sockets, expect_log, head


def sockets_settle(world: World, want: int, timeout: float = 10) -> int:
    """The node's socket count once it equals `want` (or whatever it is at the deadline)."""
    with contextlib.suppress(AssertionError):  # the caller asserts on the count
        eventually(lambda: connected_sockets(world) == want, "", timeout, interval=0.1)
    return connected_sockets(world)


def test_two_tabs_of_one_user_share_one_connection_and_lose_nothing_when_the_leader_closes(
        portal: Portal) -> None:
    world = portal.world
    project, ticket = f"project-{world.project}", f"ticket-{world.ticket}"
    user = f"user-{world.ids['client']}"
    before = {stream: head(world, stream) for stream in (project, ticket, user)}
    assert sockets_settle(world, 0) == 0  # earlier tests' browsers are gone
    context = portal.context()
    first = portal.open("client", context=context)
    second = portal.open("client", context=context)
    # Only the leader holds a Connection (`isLeader` is `_conn !== null`), the one thing
    # that opens a socket: no second connection is on its way. The node counts one socket
    # (a socket of a connection dropped meanwhile would be gone once the count settles).
    assert [first.is_leader(), second.is_leader()].count(True) == 1
    assert sockets_settle(world, 1) == 1

    world.api.ok("PATCH", f"/api/projects/{world.project}", json={"progress": 40})
    for tab in (first, second):
        expect(tab.progress(world.project)).to_have_text("40% complete")

    leader, follower = (first, second) if first.is_leader() else (second, first)
    leader.page.close()
    for progress in (50, 60):  # while the follower takes over
        world.api.ok("PATCH", f"/api/projects/{world.project}", json={"progress": progress})
    world.api.ok("POST", f"/api/tickets/{world.ticket}/messages",
                 json={"message": "sent while the leader closed"},
                 token=world.token("technician"))

    expect(follower.progress(world.project)).to_have_text("60% complete")
    expect(follower.stored).to_have_text(["sent while the leader closed"])
    expect_log(world, follower, project, before[project], 3)
    expect_log(world, follower, user, before[user], 3)  # its "Project updated" notifications
    expect_log(world, follower, ticket, before[ticket], 1)
    assert follower.is_leader()
    assert sockets_settle(world, 1) == 1


def test_a_token_that_expires_mid_session_is_refreshed_without_the_user_noticing(
        portal: Portal) -> None:
    world = portal.world
    context = portal.context()
    # Tokens of 8 s: the portal takes a new one with less than half its life left, so
    # each connection has 4-8 s before the node closes it at the token's expiry. A
    # connect slowed past a second or two can be closed again before the page catches up:
    # with 2 s tokens the page once went 15 s without the PATCH at load 16, and with 4 s
    # once in a fresh-clone CI run (2026-12-07).
    client = portal.open("client", context=context, ttl=8)
    minted = client.mints()
    # Wait past the first token's expiry on the page's clock. (Not "the session's token has
    # expired": the node closes the transport at the expiry and the page reconnects with a
    # new token within milliseconds, so that state can pass between two polls; it did in a
    # fresh-clone CI run, 2026-12-07. The page's clock only goes on.)
    expires = client.page.evaluate("window.heraldPortal.session.expiresAt")
    assert expires > 0  # the page holds its first token
    client.page.wait_for_function(f"() => Date.now() > {expires}", timeout=30_000)

    # The connection drops after the token expired: reconnecting needs a new one.
    context.set_offline(True)
    client.expect_not_online()
    context.set_offline(False)
    client.expect_online()
    world.api.ok("PATCH", f"/api/projects/{world.project}", json={"progress": 70})
    client.send("still signed in")

    expect(client.progress(world.project)).to_have_text("70% complete")
    expect(client.stored).to_have_text(["still signed in"])
    assert client.mints() > minted
    expect(client.page.locator(".toast-error")).to_have_count(0)
    expect(client.page.locator("#signin")).to_be_hidden()
