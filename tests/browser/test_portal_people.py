"""The portal's people: the notification bell and its inbox (synced across two windows of one
user), who is here in the ticket header, one toast per project change, names in the chat, the
notification sound and system notifications. Screenshots go to var/test-artifacts/."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Portal, PortalPage


def notify(portal: Portal, title: str, count: int = 1) -> None:
    world = portal.world
    body = [{"stream": f"user-{world.ids['client']}", "type": "notification",
             "data": {"type": "info", "title": f"{title} {i}" if count > 1 else title,
                      "message": "from the test"}} for i in range(count)]
    world.api.ok("POST", "/api/events", token=world.token("service"),
                 json=body if count > 1 else body[0])


def bell(tab: PortalPage) -> Any:
    return tab.page.locator("#bell-count")


def items(tab: PortalPage) -> Any:
    return tab.page.locator("#inbox-items .inbox-item")


def test_the_bell_counts_unread_and_two_windows_of_a_user_agree_on_seen_read_and_all_read(
        portal: Portal) -> None:
    profile = portal.context()
    first = portal.open("client", context=profile)
    second = portal.open("client", context=profile)  # a second window: the shared connection
    for tab in (first, second):
        expect(bell(tab)).to_be_hidden()
    for n in range(3):
        notify(portal, f"Invoice {n}")
    for tab in (first, second):
        expect(bell(tab)).to_have_text("3")

    first.page.locator("#bell").click()  # opening shows the items and marks them seen
    expect(items(first)).to_have_count(3)
    expect(first.page.locator("#inbox-items .inbox-item.unread")).to_have_count(3)
    expect(items(first).first).to_contain_text("Invoice 2")  # newest first
    # Predicates are functions: the page's CSP has no 'unsafe-eval', and Playwright evals a
    # plain expression again at each poll (EvalError), a function only once.
    first.page.wait_for_function(
        "() => window.heraldPortal.herald.inbox.counts && "
        "window.heraldPortal.herald.inbox.counts.unseen === 0")
    second.page.wait_for_function("() => window.heraldPortal.herald.inbox.counts.unseen === 0")
    expect(bell(second)).to_have_text("3")  # seen is not read

    items(first).nth(1).locator("button").click()  # read when clicked
    for tab in (first, second):
        expect(bell(tab)).to_have_text("2")
    expect(first.page.locator("#inbox-items .inbox-item.unread")).to_have_count(2)
    portal.screenshot(first, "bell-dropdown-open")

    second.page.locator("#bell").click()
    expect(second.page.locator("#inbox-items .inbox-item.unread")).to_have_count(2)
    second.page.locator("#mark-all-read").click()
    for tab in (first, second):
        expect(bell(tab)).to_be_hidden()
        expect(tab.page.locator("#inbox-items .inbox-item.unread")).to_have_count(0)
    portal.screenshot(second, "bell-all-read")


def test_the_bell_says_99_plus_past_99_unread(portal: Portal) -> None:
    client = portal.open("client")
    notify(portal, "Bulk", count=99)
    expect(bell(client)).to_have_text("99")
    notify(portal, "One more")
    expect(bell(client)).to_have_text("99+")
    client.page.reload()
    client.wait_ready()
    expect(bell(client)).to_have_text("99+")  # also from the HTTP counts
    portal.screenshot(client, "bell-99-plus")


def test_the_ticket_header_shows_who_is_here_across_two_users(portal: Portal) -> None:
    client = portal.open("client")
    technician = portal.open("technician")
    for tab in (client, technician):
        expect(tab.page.locator("#present .person")).to_have_text(
            ["client (you)", "technician"] if tab is client else ["technician (you)", "client"])
    portal.screenshot(client, "presence-two-users")
    technician.page.close()
    expect(client.page.locator("#present .person")).to_have_text(["client (you)"])


def test_one_project_patch_shows_one_toast_and_one_inbox_item(portal: Portal) -> None:
    world = portal.world
    client = portal.open("client")
    world.api.ok("PATCH", f"/api/projects/{world.project}", json={"progress": 60,
                                                                   "status": "active"})
    expect(client.toast("success", "60%")).to_be_visible()
    expect(bell(client)).to_have_text("1")  # the notification is in the inbox ...
    client.page.wait_for_function("() => window.heraldPortal.deduped() === 1")  # ... not a toast
    assert client.page.evaluate("window.heraldPortal.toasts") == [
        {"type": "success", "title": "P: 60%"}]
    expect(client.page.locator(".toast")).to_have_count(1)


def test_chat_shows_names_not_email_addresses(portal: Portal) -> None:
    client, technician = portal.open("client"), portal.open("technician")
    technician.send("Coming tomorrow")
    expect(client.stored).to_have_text(["Coming tomorrow"])
    author = client.page.locator("#messages .message .author")
    expect(author).to_have_text(["technician"])
    expect(client.toast("info", "New message from technician")).to_be_visible()
    client.page.reload()
    client.wait_ready()
    expect(author).to_have_text(["technician"])  # the history over HTTP too
    assert "@" not in client.page.locator("#messages").inner_text()


STUB_NOTIFICATIONS = """
window.__shown = [];
window.__hidden = false;
class FakeNotification {
  constructor(title, options) { window.__shown.push({ title, body: options && options.body }); }
  static requestPermission() { return Promise.resolve('granted'); }
}
FakeNotification.permission = 'granted';
window.Notification = FakeNotification;
Object.defineProperty(Document.prototype, 'visibilityState', {
  configurable: true, get() { return window.__hidden ? 'hidden' : 'visible'; } });
"""


def test_a_sound_unless_muted_remembered_and_a_system_notification_when_hidden(
        portal: Portal) -> None:
    profile = portal.context()
    profile.add_init_script(STUB_NOTIFICATIONS)
    client = portal.open("client", context=profile)
    beeps = "window.heraldPortal.bell.beeps"
    notify(portal, "Ding")
    expect(client.toast("info", "Ding")).to_be_visible()
    assert client.page.evaluate(beeps) == 1

    client.page.locator("#mute").click()
    expect(client.page.locator("#mute")).to_have_attribute("aria-pressed", "true")
    client.page.reload()
    client.wait_ready()
    expect(client.page.locator("#mute")).to_have_attribute("aria-pressed", "true")
    notify(portal, "Quiet")
    expect(client.toast("info", "Quiet")).to_be_visible()
    assert client.page.evaluate(beeps) == 0

    client.page.evaluate("window.__hidden = true")
    notify(portal, "While away")
    client.page.wait_for_function("() => window.__shown.length === 1")
    assert client.page.evaluate("window.__shown") == [{"title": "While away",
                                                        "body": "from the test"}]
    assert client.page.evaluate(beeps) == 0
