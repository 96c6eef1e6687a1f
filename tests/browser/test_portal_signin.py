"""Signing in: a demo-user picker in development, an access token in production."""

from __future__ import annotations

from playwright.sync_api import expect

from testkit.processes import WebNode
from tests.browser.conftest import Portal


def test_picking_a_demo_user_opens_the_portal_as_that_user(portal: Portal) -> None:
    world = portal.world
    page = portal.context().new_page()
    page.goto(f"{world.url}/portal/")
    expect(page.locator("#pick-form")).to_be_visible()
    page.locator("#pick-user").select_option(str(world.ids["technician"]))
    page.get_by_role("button", name="Open the portal").click()

    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#who-role")).to_have_text("technician")
    expect(page.locator(f'.project[data-project-id="{world.project}"]')).to_be_visible()
    expect(page.locator("#connection")).to_have_attribute("data-state", "online")


def test_in_production_there_is_no_picker_and_an_access_token_opens_the_portal(
        portal: Portal) -> None:
    world = portal.world
    node = WebNode({**world.system.env, "HERALD_ENV": "production"}, world.system.log_dir)
    node.start()
    try:
        page = portal.context().new_page()
        page.goto(f"{node.url}/portal/")
        expect(page.locator("#token-form")).to_be_visible()
        expect(page.locator("#pick-form")).to_be_hidden()
        page.locator("#token-input").fill(world.token("client"))
        page.locator("#token-form button").click()

        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#who-role")).to_have_text("client")
        expect(page.locator("#connection")).to_have_attribute("data-state", "online")
    finally:
        node.stop()
