"""Ticket chat on the portal page, between two users in two browsers."""

from __future__ import annotations

from playwright.sync_api import expect
from sqlalchemy import select

from testkit.world import World
from tests.browser.conftest import Portal
from tests.browser.streams import expect_log, head


def stored_messages(world: World, ticket: int) -> list[str]:
    from app.portal.models import Message

    with world.system.factory() as session:
        return list(session.scalars(select(Message.body).where(Message.ticket_id == ticket)
                                    .order_by(Message.id)))


def test_two_users_chat_with_typing_shown_and_hidden_and_each_message_once(
        portal: Portal) -> None:
    client, technician = portal.open("client"), portal.open("technician")

    client.type("Hello")
    expect(technician.typing).to_be_visible()
    expect(technician.typing).to_have_text("client is typing…")
    expect(technician.typing).to_be_hidden()  # two idle seconds: typing-stop
    expect(client.typing).to_be_hidden()  # nobody typed on the client's side

    client.send("Hello, the tap is still leaking")
    technician.type("On my way")
    expect(client.typing).to_have_text("technician is typing…")
    technician.send("On my way, there in an hour")
    expect(client.typing).to_be_hidden()  # sending stops typing at once

    conversation = ["Hello, the tap is still leaking", "On my way, there in an hour"]
    for page in (client, technician):
        # The second message follows the first on the ticket's stream: once it is shown,
        # a repeated first one would have been too.
        expect(page.stored).to_have_text(conversation)
        expect(page.pending).to_have_count(0)
    assert stored_messages(portal.world, portal.world.ticket) == conversation


def test_messages_sent_offline_are_pending_then_stored_once_in_order(portal: Portal) -> None:
    world = portal.world
    stream = f"ticket-{world.ticket}"
    before = head(world, stream)
    technician = portal.open("technician")
    offline = portal.context()
    client = portal.open("client", context=offline)

    offline.set_offline(True)
    client.expect_not_online()
    sent = ["first while offline", "second while offline", "third while offline"]
    for text in sent:
        client.send(text)
    expect(client.pending).to_have_text(sent)
    assert stored_messages(world, world.ticket) == []

    offline.set_offline(False)
    client.expect_online()
    expect(client.pending).to_have_count(0)
    for page in (client, technician):
        expect(page.stored).to_have_text(sent)
    assert stored_messages(world, world.ticket) == sent
    for page in (client, technician):
        expect_log(world, page, stream, before, 3)
