"""The portal page follows what changes: toasts and progress, also across a web node crash."""

from __future__ import annotations

import re
import time

from playwright.sync_api import expect
from sqlalchemy import select

from app import portal as portal_domain
from app.auth import Principal, decode
from tests.browser.conftest import Portal, PortalPage
from tests.support.env import SECRET
from tests.support.processes import WebNode
from tests.support.world import World


def principal(world: World, role: str) -> Principal:
    return decode(world.token(role), secret=SECRET)


def head(world: World, stream: str) -> int:
    return int(world.api.ok("GET", f"/api/streams/{stream}/events?after=0&limit=1")
               ["head"]["offset"])


def wait_relayed(world: World, streams: list[str], timeout: float = 15) -> None:
    """Until the relay has published every event of `streams` (to no web node, if none runs)."""
    from app.outbox.tables import RelayCursor, Stream

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with world.system.factory() as session:
            heads = dict(session.execute(select(Stream.name, Stream.head)
                                         .where(Stream.name.in_(streams))).all())
            sent = dict(session.execute(select(RelayCursor.stream, RelayCursor.dispatched)
                                        .where(RelayCursor.stream.in_(streams))).all())
        if all(sent.get(name, 0) >= heads.get(name, 0) for name in streams):
            return
        time.sleep(0.05)
    raise AssertionError(f"not relayed in {timeout}s: heads {heads}, dispatched {sent}")


def expect_log(tab: PortalPage, stream: str, after: int, count: int,
               timeout: float = 15) -> None:
    """The page was handed exactly the `count` events of `stream` after offset `after`, in
    order (none lost, none twice); waits for them, then checks that nothing else came."""
    want = [(stream, offset) for offset in range(after + 1, after + count + 1)]
    deadline = time.monotonic() + timeout
    while (got := tab.received(stream)) != want and time.monotonic() < deadline:
        if len(got) > len(want):
            break
        time.sleep(0.05)
    assert got == want


def test_an_admin_patch_shows_a_toast_and_the_new_progress_on_the_clients_page(
        portal: Portal) -> None:
    world = portal.world
    client = portal.open("client")
    expect(client.progress(world.project)).to_have_text("0% complete")

    world.api.ok("PATCH", f"/api/projects/{world.project}", json={"progress": 60,
                                                                   "status": "active"})

    expect(client.toast("success", "60%")).to_be_visible()
    expect(client.progress(world.project)).to_have_text("60% complete")
    bar = client.page.locator(f'.project[data-project-id="{world.project}"] .progress')
    expect(bar).to_have_attribute("aria-valuenow", "60")
    expect(client.page.locator(".toast-info", has_text=re.compile("Project updated"))
           ).to_be_visible()


def test_after_a_web_node_crash_the_page_shows_each_missed_event_once_in_order(
        portal: Portal) -> None:
    world = portal.world
    system = world.system
    project, ticket = f"project-{world.project}", f"ticket-{world.ticket}"
    user = f"user-{world.ids['client']}"
    heads = {stream: head(world, stream) for stream in (project, ticket, user)}
    client = portal.open("client")
    world.api.ok("PATCH", f"/api/projects/{world.project}", json={"progress": 10})
    world.api.ok("POST", f"/api/tickets/{world.ticket}/messages",
                 json={"message": "before the crash"}, token=world.token("technician"))
    expect(client.progress(world.project)).to_have_text("10% complete")
    expect(client.stored).to_have_text(["before the crash"])

    node = system.webs[0]
    node.kill()
    client.expect_not_online()
    admin, technician = principal(world, "admin"), principal(world, "technician")
    for progress, text in ((20, "missed one"), (30, "missed two")):
        with system.factory() as session, session.begin():
            portal_domain.update_project(session, admin, world.project, progress=progress,
                                         status="active")
        portal_domain.post_message(system.factory, technician, world.ticket, text)
    wait_relayed(world, [project, ticket, user])  # published while no node listens: missed
    system.webs[0] = restarted = WebNode(system.env, system.log_dir, port=node.port)
    restarted.start()

    client.expect_online()
    expect(client.stored).to_have_text(["before the crash", "missed one", "missed two"])
    expect(client.progress(world.project)).to_have_text("30% complete")
    expect_log(client, project, heads[project], 3)
    expect_log(client, ticket, heads[ticket], 3)
    expect_log(client, user, heads[user], 3)  # the client's "Project updated" notifications
