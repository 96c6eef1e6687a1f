"""Browser tests: real Chromium (Debian's `chromium`, driven by Playwright for Python) on the
`/portal` page of a real system (web node + Celery worker on PostgreSQL, tests/conftest.py).

Playwright's own browser download cannot work here: `make install` installs Debian's chromium,
and the tests launch it by `executable_path`. Without it they skip, or fail under CI=true.
When a test fails, a screenshot and the console of each of its pages are kept under
var/test-artifacts/.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from testkit.processes import ROOT
from testkit.system import System
from testkit.testrun import CI
from testkit.world import World, build_world

ARTIFACTS = ROOT / "var" / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-default-apps", "--mute-audio",
    # two tabs of one user must both keep running (the follower tab relies on its timers)
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
TIMEOUT_MS = 15_000

expect.set_options(timeout=TIMEOUT_MS)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.browser.streams import TALLY

    if TALLY["expected"]:
        terminalreporter.write_line(
            f"portal pages: {TALLY['expected']} durable events expected, "
            f"{TALLY['lost']} lost, {TALLY['duplicated']} duplicated")


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for tests/browser: Playwright's sync API marks its event loop as running
    between calls, so it must not outlive this package (other modules run asyncio tests;
    every test here is synchronous). Each test opens contexts of its own (Portal)."""
    executable = shutil.which("chromium")
    if executable is None:
        message = "chromium is not installed (make install installs Debian's chromium)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class PortalPage:
    """The portal as a user sees it, in one tab."""

    def __init__(self, page: Page, console: list[str]) -> None:
        self.page = page
        self.console = console

    def wait_ready(self) -> PortalPage:
        expect(self.page.locator("body")).to_have_attribute("data-ready", "true")
        self.expect_online()
        return self

    def expect_online(self) -> None:
        expect(self.page.locator("#connection")).to_have_attribute("data-state", "online")

    def expect_not_online(self) -> None:
        expect(self.page.locator("#connection")).not_to_have_attribute("data-state", "online")

    @property
    def typing(self) -> Any:
        return self.page.locator("#typing")

    @property
    def stored(self) -> Any:
        """Chat messages shown as stored (not pending)."""
        return self.page.locator("#messages .message:not(.pending) .text")

    @property
    def pending(self) -> Any:
        return self.page.locator("#messages .message.pending .text")

    def toast(self, kind: str, text: str) -> Any:
        return self.page.locator(f".toast-{kind}", has_text=text)

    def progress(self, project: int) -> Any:
        return self.page.locator(f'.project[data-project-id="{project}"] .progress-label')

    def type(self, text: str) -> None:
        self.page.locator("#message-input").press_sequentially(text, delay=20)

    def send(self, text: str) -> None:
        self.page.locator("#message-input").fill(text)
        self.page.locator("#message-input").press("Enter")

    def received(self, stream: str | None = None) -> list[tuple[str, int]]:
        """(stream, offset) of each durable event the page was handed, in order."""
        log = self.page.evaluate("window.heraldPortal.received")
        return [(e["stream"], e["offset"]) for e in log if stream in (None, e["stream"])]

    def position(self, stream: str) -> int:
        """The offset of `stream` this tab's client delivered through (0: none yet)."""
        seen = self.page.evaluate("(s) => window.heraldPortal.herald.positions()[s]", stream)
        return int(seen["offset"]) if seen else 0

    def is_leader(self) -> bool:
        return bool(self.page.evaluate("window.heraldPortal.herald.isLeader"))

    def mints(self) -> int:
        return int(self.page.evaluate("window.heraldPortal.session.mints"))


class Portal:
    """Opens portal tabs as users of the world; keeps failure artifacts; closes everything."""

    def __init__(self, browser: Browser, world: World) -> None:
        self.browser = browser
        self.world = world
        self.contexts: list[BrowserContext] = []
        self.tabs: list[PortalPage] = []

    def context(self, width: int = 1200, height: int = 760) -> BrowserContext:
        """A browser profile of its own (storage, tabs' locks and channels)."""
        context = self.browser.new_context(viewport={"width": width, "height": height})
        self.contexts.append(context)
        return context

    def open(self, role: str, context: BrowserContext | None = None, ticket: int | None = None,
             ttl: int | None = None, base: str | None = None, query: str = "") -> PortalPage:
        context = context or self.context()
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        tab = PortalPage(page, console)
        self.tabs.append(tab)
        query = f"user={self.world.ids[role]}&ticket={ticket or self.world.ticket}{query}"
        if ttl is not None:
            query += f"&ttl={ttl}"
        page.goto(f"{base or self.world.url}/portal/?{query}")
        return tab.wait_ready()

    def screenshot(self, tab: PortalPage, name: str) -> Path:
        """Keep a screenshot of `tab` under var/test-artifacts/, pass or fail."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^\w.-]+", "_", name)
        path = ARTIFACTS / f"{stem}.png"
        tab.page.screenshot(path=str(path), full_page=True)
        return path

    def keep_artifacts(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^\w.-]+", "_", name)
        for index, tab in enumerate(self.tabs):
            target = ARTIFACTS / f"{stem}-{index}"
            if not tab.page.is_closed():
                tab.page.screenshot(path=f"{target}.png", full_page=True)
            Path(f"{target}.console.txt").write_text("\n".join(tab.console))

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def world(pg_system_session: System) -> World:
    """Users of every role around one project and ticket, on empty tables."""
    return build_world(pg_system_session)


@pytest.fixture
def portal(browser: Browser, world: World, request: pytest.FixtureRequest) -> Iterator[Portal]:
    portal = Portal(browser, world)
    try:
        yield portal
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            portal.keep_artifacts(request.node.name)
        portal.close()
        world.api.close()

