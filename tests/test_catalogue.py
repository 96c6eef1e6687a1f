"""Every server→client event of the protocol, end to end over a real socket, and the OpenAPI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from testkit.clients import Received, SocketClient
from testkit.world import World, build_world

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    """The same portal on SQLite and on PostgreSQL (each module-wide, built once)."""
    name = "sqlite_system_session" if request.param == "sqlite" else "pg_system_session"
    w = build_world(request.getfixturevalue(name))
    yield w
    w.api.close()


async def _socket(world: World, role: str, *joins: tuple[str, int]) -> SocketClient:
    socket = SocketClient(world.url, world.token(role))
    await socket.connect()
    await socket.wait_count("connected", 1)
    for event, ident in joins:
        ack = await socket.call(event, ident)
        assert ack["ok"] is True, ack
    return socket


async def _one(socket: SocketClient, name: str, stream: str) -> Received:
    [event] = await socket.wait_count(name, 1)
    assert event.meta is not None and event.meta["stream"] == stream
    assert set(event.meta) == {"id", "stream", "offset", "epoch", "ts"}
    return event


async def test_ticket_patch_sends_ticket_updated_to_the_ticket_room(world: World) -> None:
    ticket = world.fresh_ticket()
    socket = await _socket(world, "client", ("join-ticket", ticket))
    try:
        world.api.ok("PATCH", f"/api/tickets/{ticket}", world.token("technician"),
                     json={"status": "resolved", "priority": "high"})
        event = await _one(socket, "ticket-updated", f"ticket-{ticket}")
        assert event.payload == {"ticketId": ticket, "status": "resolved", "priority": "high"}
    finally:
        await socket.close()


async def test_http_message_sends_new_message_to_the_ticket_room(world: World) -> None:
    ticket = world.fresh_ticket()
    socket = await _socket(world, "technician", ("join-ticket", ticket))
    try:
        posted = world.api.ok("POST", f"/api/tickets/{ticket}/messages", world.token("client"),
                              json={"message": "Any news?"})
        event = await _one(socket, "new-message", f"ticket-{ticket}")
        assert event.payload["messageId"] == posted["id"]
        assert event.payload["ticketId"] == ticket and event.payload["message"] == "Any news?"
        assert event.payload["createdAt"].endswith("Z")
    finally:
        await socket.close()


async def test_project_patch_sends_project_updated_to_the_project_room(world: World) -> None:
    socket = await _socket(world, "client", ("join-project", world.project))
    try:
        world.api.ok("PATCH", f"/api/projects/{world.project}", world.token("technician"),
                     json={"progress": 60, "status": "active"})
        event = await _one(socket, "project-updated", f"project-{world.project}")
        assert event.payload == {"projectId": world.project, "progress": 60, "status": "active"}
    finally:
        await socket.close()


async def test_document_sends_document_added_to_the_project_room(world: World) -> None:
    socket = await _socket(world, "client", ("join-project", world.project))
    try:
        doc = world.api.ok("POST", f"/api/projects/{world.project}/documents",
                           world.token("technician"),
                           json={"name": "Report.pdf", "url": "https://files.test/r.pdf"})
        event = await _one(socket, "document-added", f"project-{world.project}")
        assert event.payload == {"projectId": world.project, "document": {
            "id": doc["id"], "name": "Report.pdf", "url": "https://files.test/r.pdf"}}
    finally:
        await socket.close()


async def test_intervention_create_and_patch_send_intervention_updated(world: World) -> None:
    socket = await _socket(world, "client", ("join-project", world.project))
    try:
        created = world.api.ok("POST", "/api/interventions", world.token("technician"),
                               json={"projectId": world.project, "title": "Boiler",
                                     "scheduledAt": "2026-12-01T09:00:00Z"})
        world.api.ok("PATCH", f"/api/interventions/{created['id']}", world.token("admin"),
                     json={"status": "done", "notes": "Replaced valve"})
        first, second = await socket.wait_count("intervention-updated", 2)
        assert first.payload == {"projectId": world.project, "intervention": {
            "id": created["id"], "projectId": world.project, "status": "planned",
            "title": "Boiler", "scheduledAt": "2026-12-01T09:00:00Z"}}
        assert second.payload["intervention"] == first.payload["intervention"] | {
            "status": "done", "notes": "Replaced valve"}
        assert first.meta is not None and second.meta is not None
        assert second.meta["offset"] == first.meta["offset"] + 1
    finally:
        await socket.close()


async def test_quote_sends_quote_updated_to_its_client_only(world: World) -> None:
    client = await _socket(world, "client")
    other = await _socket(world, "other-client")
    try:
        quote = world.api.ok("POST", "/api/quotes",
                             json={"clientId": world.ids["client"], "amount": "1200.5",
                                   "projectId": world.project})
        assert quote["amount"] == "1200.50" and quote["status"] == "draft"
        world.api.ok("PATCH", f"/api/quotes/{quote['id']}", json={"status": "sent"})
        first, second = await client.wait_count("quote-updated", 2)
        assert [first.payload, second.payload] == [
            {"quoteId": quote["id"], "status": "draft"},
            {"quoteId": quote["id"], "status": "sent"}]
        assert first.meta is not None and first.meta["stream"] == f"user-{world.ids['client']}"
        assert world.api.ok("GET", f"/api/quotes/{quote['id']}",
                            world.token("client"))["status"] == "sent"
        await other.call("heartbeat")
        assert other.named("quote-updated") == []
    finally:
        await asyncio.gather(client.close(), other.close())


async def test_notification_to_a_user_reaches_that_user(world: World) -> None:
    socket = await _socket(world, "technician")
    try:
        world.api.ok("POST", "/api/notifications",
                     json={"userId": world.ids["technician"], "type": "warning",
                           "title": "Van", "message": "Service due"})
        event = await _one(socket, "notification", f"user-{world.ids['technician']}")
        assert event.payload == {"type": "warning", "title": "Van", "message": "Service due"}
    finally:
        await socket.close()


async def test_notification_to_a_role_reaches_everyone_of_that_role_only(world: World) -> None:
    a, b, tech = (await _socket(world, "client"), await _socket(world, "other-client"),
                  await _socket(world, "technician"))
    try:
        world.api.ok("POST", "/api/notifications",
                     json={"role": "client", "type": "success", "title": "New portal"})
        for socket in (a, b):
            event = await _one(socket, "notification", "clients")
            assert event.payload == {"type": "success", "title": "New portal", "message": ""}
        await tech.call("heartbeat")
        assert [e for e in tech.named("notification") if e.meta
                and e.meta["stream"] == "clients"] == []
    finally:
        await asyncio.gather(a.close(), b.close(), tech.close())


@pytest.mark.parametrize("body", [
    {"userId": 1, "role": "client", "type": "info", "title": "t"},
    {"type": "info", "title": "t"},
    {"role": "client", "type": "fatal", "title": "t"},
    {"role": "client", "type": "info", "title": ""},
    {"role": "service", "type": "info", "title": "t"},
])
def test_invalid_notification_is_422_and_stores_nothing(world: World, body: dict[str, Any]
                                                        ) -> None:
    before = world.counts()
    response = world.api.request("POST", "/api/notifications", json=body)
    assert response.status_code == 422 and world.counts() == before


async def test_service_event_reaches_the_room_with_its_own_type(world: World) -> None:
    socket = await _socket(world, "client", ("join-project", world.project))
    try:
        published = world.api.ok("POST", "/api/events", world.token("service"),
                                 json={"stream": f"project-{world.project}",
                                       "type": "invoice-issued", "data": {"invoice": 7}})
        event = await _one(socket, "invoice-issued", f"project-{world.project}")
        assert event.payload == {"invoice": 7}
        assert event.meta is not None and event.meta["id"] == published["id"]
        assert event.meta["offset"] == published["offset"]
    finally:
        await socket.close()


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/projects/{p}/documents", {"name": "a", "url": "ftp://x.test/a"}),
    ("POST", "/api/projects/{p}/documents", {"name": "", "url": "https://x.test/a"}),
    ("POST", "/api/interventions", {"projectId": "{p}", "status": "exploded"}),
    ("PATCH", "/api/tickets/{t}", {"status": "lost"}),
    ("PATCH", "/api/tickets/{t}", {"priority": 3}),
    ("POST", "/api/quotes", {"clientId": "{c}", "amount": -1}),
    ("POST", "/api/quotes", {"clientId": "{c}", "amount": "1.001"}),
    ("POST", "/api/quotes", {"clientId": "{tech}", "amount": 1}),
    ("PATCH", "/api/quotes/{q}", {"status": "paid"}),
    ("PATCH", "/api/projects/{p}", {"progress": 101}),
    ("PATCH", "/api/tickets/{big}", {"status": "open"}),
    ("PATCH", "/api/projects/{big}", {"progress": 1}),
    ("POST", "/api/tickets", {"projectId": "{big}", "subject": "s"}),
    ("POST", "/api/users", {"email": "nul@x.test", "role": "client", "name": "a\x00b"}),
    ("POST", "/api/tickets", {"projectId": "{p}", "subject": "\ud800"}),
    ("POST", "/api/projects/{p}/documents", {"name": "a\x00", "url": "https://x.test/a"}),
    ("POST", "/api/interventions", {"projectId": "{p}", "notes": "\ud800"}),
    ("POST", "/api/notifications", {"role": "client", "type": "info", "title": "a\x00"}),
])
def test_invalid_body_is_422_and_stores_nothing(world: World, method: str, path: str,
                                                body: dict[str, Any]) -> None:
    ids = {"p": world.project, "t": world.ticket, "c": world.ids["client"],
           "tech": world.ids["technician"], "q": world.quote, "big": 10**20}

    def fill(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
            return ids[value[1:-1]]
        return value

    before = world.counts()
    response = world.api.request(method, path.format(**ids),
                                 content=json.dumps({k: fill(v) for k, v in body.items()}),
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert world.counts() == before


# -- OpenAPI -------------------------------------------------------------------------------

ROUTES = {
    ("patch", "/api/tickets/{ticket_id}"): {200},
    ("post", "/api/tickets/{ticket_id}/messages"): {200, 201},
    ("post", "/api/projects/{project_id}/documents"): {201},
    ("post", "/api/interventions"): {201},
    ("patch", "/api/interventions/{intervention_id}"): {200},
    ("post", "/api/quotes"): {201},
    ("get", "/api/quotes/{quote_id}"): {200},
    ("patch", "/api/quotes/{quote_id}"): {200},
    ("post", "/api/notifications"): {201},
    ("post", "/api/events"): {201, 413, 410},
}


def test_openapi_describes_every_route_with_bodies_and_errors(world: World) -> None:
    spec = world.api.ok("GET", "/openapi.json", token="")
    operations = {(method, path): op for path, item in spec["paths"].items()
                  for method, op in item.items()}
    for (method, path), extra in ROUTES.items():
        op = operations[(method, path)]
        codes = {int(code) for code in op["responses"]}
        assert extra | {401, 403, 422} <= codes, (method, path, codes)
        assert op.get("summary") and op.get("description"), (method, path)
        if method in {"post", "patch"}:
            assert op["requestBody"]["content"]["application/json"]["schema"], (method, path)
    for (method, path), op in operations.items():
        if path.startswith("/api/"):
            assert {401, 403} <= {int(c) for c in op["responses"]}, (method, path)


def test_docs_page_is_served(world: World) -> None:
    response = world.api.request("GET", "/docs", token="")
    assert response.status_code == 200 and "swagger" in response.text.lower()
