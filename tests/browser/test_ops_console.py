"""The operators' console (`/ops`) in real Chromium, on a real system of its own: a web node
and a Celery worker on PostgreSQL, with a private redis-server whose ACL may refuse (S)PUBLISH
(so a stream really fails), heartbeats every 0.3 s and the page polling every 0.3 s.

A screenshot of each test's page is kept under var/test-artifacts/ (ops-*.png), whether
it passed or failed, with the page's console.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from playwright.sync_api import Browser, Page, expect

from app.outbox.tables import RelayCursor
from testkit.private import PrivateSystem, private_system
from testkit.processes import WebNode, Worker
from tests.browser.conftest import ARTIFACTS

ENV = {"HERALD_RELAY_MAX_ATTEMPTS": "2", "HERALD_RELAY_BACKOFF": "0.1",
       "HERALD_HEARTBEAT_INTERVAL": "0.3"}
POLL_MS = 300


@pytest.fixture(scope="module")
def ops_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSystem]:
    with private_system(tmp_path_factory.mktemp("ops"), "_ops_console", env=ENV) as system:
        yield system


def _refuse_publish(system: PrivateSystem, refuse: bool) -> None:
    """The relay publishes with SPUBLISH (each stream's own channel), PUBLISH on the shared one."""
    rules = ("-publish", "-spublish") if refuse else ("+publish", "+spublish")
    with redis_lib.Redis.from_url(system.redis.url) as client:
        client.execute_command("ACL", "SETUSER", "default", *rules)


class Console:
    """One /ops tab; its screenshot and console are kept at the end of the test."""

    def __init__(self, browser: Browser, system: PrivateSystem, name: str) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page: Page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.system = system
        self.name = name

    def open(self, user_id: int) -> Console:
        self.page.goto(f"{self.system.web.url}/ops/?user={user_id}&poll={POLL_MS}")
        expect(self.page.locator("body")).to_have_attribute("data-ready", "true")
        return self

    def row(self, stream: str) -> Any:
        return self.page.locator(f'#stream-rows tr[data-stream="{stream}"]')

    def shot(self, label: str) -> None:
        """A screenshot of the page as it is now, kept with the test's artifacts."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        stem = ARTIFACTS / ("ops-" + re.sub(r"[^\w.-]+", "_", self.name))
        self.page.screenshot(path=f"{stem}-{label}.png", full_page=True)

    def keep(self) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        stem = ARTIFACTS / ("ops-" + re.sub(r"[^\w.-]+", "_", self.name))
        if not self.page.is_closed():
            self.page.screenshot(path=f"{stem}.png", full_page=True)
        Path(f"{stem}.console.txt").write_text("\n".join(self.console))
        self.context.close()


@pytest.fixture
def console(browser: Browser, ops_system: PrivateSystem,
            request: pytest.FixtureRequest) -> Iterator[Console]:
    tab = Console(browser, ops_system, request.node.name)
    try:
        yield tab
    finally:
        _refuse_publish(ops_system, False)
        tab.keep()


def _admin_id(system: PrivateSystem) -> int:
    users = system.api.ok("GET", "/api/dev/users")["users"]
    return int(next(u["id"] for u in users if u["role"] == "admin"))


def _last_error(system: PrivateSystem, stream: str) -> str:
    with system.factory() as session:
        cursor = session.get(RelayCursor, stream)
        assert cursor is not None and cursor.last_error
        return cursor.last_error


def test_a_failed_stream_shows_its_error_the_filter_finds_it_and_retry_heals_it(
    console: Console, ops_system: PrivateSystem,
) -> None:
    api = ops_system.api
    client_id, _ = api.user("client")
    project = api.project(client_id)
    bad, other = f"project-{project}", f"user-{client_id}"
    second_client, _ = api.user("client")
    second = api.project(second_client)
    rest = [f"project-{second}", f"user-{second_client}"]
    _refuse_publish(ops_system, True)
    api.ok("PATCH", f"/api/projects/{project}", json={"progress": 40})  # both streams fail
    console.open(_admin_id(ops_system))
    page = console.page

    expect(console.row(bad)).to_have_attribute("data-state", "failed")
    expect(console.row(other)).to_have_attribute("data-state", "failed")
    error = _last_error(ops_system, bad)
    assert "NoPermissionError" in error
    expect(console.row(bad).locator("td.error")).to_have_text(error)  # whole, not cut
    expect(page.locator("#failed-count")).to_have_text("2")
    api.ok("PATCH", f"/api/projects/{second}", json={"progress": 50})  # two more, for later
    for stream in rest:
        expect(console.row(stream)).to_have_attribute("data-state", "failed")

    page.locator("#filter").fill(bad)  # by name: only that stream
    expect(page.locator("#stream-rows tr")).to_have_count(1)
    expect(console.row(bad)).to_be_visible()
    page.locator("#filter").fill("nopermission")  # by error, any case: all four
    expect(page.locator("#stream-rows tr")).to_have_count(4)
    page.locator("#filter").fill("no-such-text")
    expect(page.locator("#no-streams")).to_be_visible()
    page.locator("#filter").fill("")
    expect(page.locator("#stream-rows tr")).to_have_count(4)

    console.row(bad).locator(".name").click()  # the detail: cursor, head, the events
    expect(page.locator("#detail-title")).to_have_text(bad)
    expect(page.locator('#detail-facts [data-fact="pending"]')).to_have_text("1")
    expect(page.locator("#detail-error")).to_have_text(error)
    expect(page.locator("#detail-events li.unpublished")).to_have_count(1)
    expect(page.locator("#detail-events pre")).to_contain_text('"progress": 40')
    console.shot("failed")

    _refuse_publish(ops_system, False)  # the cause is fixed; the operator retries one
    console.row(bad).locator("input.pick").check()
    page.locator("#retry-selected").click()
    expect(page.locator("#notice")).to_contain_text(f"Retried 1 stream(s): {bad}")
    expect(console.row(bad)).to_have_count(0)
    expect(page.locator("#detail-state")).to_have_text("healthy")
    expect(page.locator('#detail-facts [data-fact="pending"]')).to_have_text("0")
    expect(page.locator("#detail-events li.published")).to_have_count(1)
    expect(console.row(other)).to_have_attribute("data-state", "failed")  # untouched

    console.row(other).locator("button.retry").click()  # one with its own button
    expect(console.row(other)).to_have_count(0)
    expect(page.locator("#failed-count")).to_have_text("2")
    for stream in rest:
        expect(console.row(stream)).to_have_attribute("data-state", "failed")

    page.locator("#retry-all").click()  # and the rest at once
    expect(page.locator("#notice")).to_contain_text(f"Retried 2 stream(s): {', '.join(rest)}")
    expect(page.locator("#no-streams")).to_be_visible()
    expect(page.locator("#failed-count")).to_have_text("0")
    expect(page.locator("#events-pending")).to_have_text("0")
    with ops_system.factory() as session:
        cursor = session.get(RelayCursor, bad)
        assert cursor is not None and (cursor.state, cursor.dispatched) == ("active", 1)


def test_a_killed_worker_disappears_from_the_workers_list(
    console: Console, ops_system: PrivateSystem,
) -> None:
    extra = Worker(ops_system.env, ops_system.log_dir)
    extra.start()
    try:
        console.open(_admin_id(ops_system))
        page = console.page
        workers = page.locator("#worker-rows tr.worker")
        expect(workers).to_have_count(2)
        expect(page.locator("#web-rows tr.web-node")).to_have_count(1)
        expect(workers.first.locator(".sweep-age")).to_have_text(re.compile(r"s ago$"))
        assert extra.proc is not None
        extra_row = page.locator(f'#worker-rows tr[data-id$=":{extra.proc.pid}"]')
        expect(extra_row).to_have_count(1)
        console.shot("two-workers")
        extra.kill()  # SIGKILL: no goodbye; its heartbeat expires
        expect(workers).to_have_count(1)
        expect(extra_row).to_have_count(0)
    finally:
        extra.stop()


def test_a_non_admin_is_refused(console: Console, ops_system: PrivateSystem) -> None:
    client_id, _ = ops_system.api.user("client")
    console.open(client_id)
    page = console.page
    expect(page.locator("#refused")).to_be_visible()
    expect(page.locator("#refused-reason")).to_contain_text("for admins")
    expect(page.locator("#console")).to_be_hidden()
    expect(page.locator("#stream-rows tr")).to_have_count(0)


def test_in_production_an_admin_token_opens_the_console_and_another_is_refused(
    console: Console, ops_system: PrivateSystem,
) -> None:
    _, client_token = ops_system.api.user("client")
    node = WebNode({**ops_system.env, "HERALD_ENV": "production"}, ops_system.log_dir)
    node.start()
    try:
        page = console.page
        page.goto(f"{node.url}/ops/?poll={POLL_MS}")
        expect(page.locator("#token-form")).to_be_visible()
        expect(page.locator("#pick-form")).to_be_hidden()
        page.locator("#token-input").fill(client_token)
        page.locator("#token-form button").click()
        expect(page.locator("#refused")).to_be_visible()

        page.locator("#refused-switch").click()  # sign in again, as an admin
        page.locator("#token-input").fill(ops_system.api.admin)
        page.locator("#token-form button").click()
        expect(page.locator("#console")).to_be_visible()
        expect(page.locator("#who-role")).to_have_text("admin")
        expect(page.locator("#worker-rows tr.worker")).to_have_count(1)
    finally:
        node.stop()
