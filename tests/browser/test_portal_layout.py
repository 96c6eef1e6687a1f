"""The portal's connection badge while the server is away (Offline after a while, with a Retry
button) and its narrow layout (a phone's 375 px: nothing wider than the screen).
Screenshots go to var/test-artifacts/."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from testkit.processes import WebNode
from tests.browser.conftest import Portal, PortalPage

OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def test_a_server_away_for_a_while_says_offline_with_a_retry_that_reconnects(
        portal: Portal, tmp_path: Path) -> None:
    system = portal.world.system
    node = WebNode(system.env, tmp_path)  # a node of our own, to kill and start again
    node.start()
    try:
        client = portal.open("client", base=node.url, query="&offlineAfter=1500")
        badge, retry = client.page.locator("#connection"), client.page.locator("#retry")
        expect(retry).to_be_hidden()
        node.kill()
        expect(badge).to_have_text("Reconnecting…")
        expect(badge).to_have_text("Offline")  # not "Reconnecting…" for ever
        expect(badge).to_have_attribute("data-state", "offline")
        expect(retry).to_be_visible()
        portal.screenshot(client, "badge-offline-retry")

        node = WebNode(system.env, tmp_path, port=node.port)
        node.start()
        retry.click()
        client.expect_online()
        expect(badge).to_have_text("Online")
        expect(retry).to_be_hidden()
    finally:
        node.stop()


def no_overflow(tab: PortalPage) -> None:
    assert tab.page.evaluate(OVERFLOW) <= 0
    wide = tab.page.evaluate("""() => [...document.querySelectorAll('body *')]
      .filter((e) => e.offsetParent !== null || getComputedStyle(e).position === 'fixed')
      .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
      .map((e) => e.id || e.className || e.tagName)""")
    assert wide == []


def test_the_narrow_layout_fits_a_375_px_screen(portal: Portal) -> None:
    world = portal.world
    phone = portal.context(width=375, height=740)
    client = portal.open("client", context=phone)
    world.api.ok("POST", f"/api/tickets/{world.ticket}/messages", token=world.token("technician"),
                 json={"message": "A long message without spaces: " + "x" * 120})
    world.api.ok("POST", "/api/notifications", json={
        "userId": world.ids["client"], "type": "warning", "title": "Payment due",
        "message": "Invoice 2026-0042 for the kitchen renovation is due on Friday"})
    expect(client.stored).to_have_count(1)
    expect(client.page.locator("#bell-count")).to_have_text("1")
    portal.screenshot(client, "narrow-375")
    no_overflow(client)

    client.page.locator("#bell").click()
    expect(client.page.locator("#inbox-items .inbox-item")).to_have_count(1)
    portal.screenshot(client, "narrow-375-inbox")
    no_overflow(client)
