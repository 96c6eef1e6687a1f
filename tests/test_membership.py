"""Tokens outlive their users' changes: the user row decides, and a technician taken off a
project leaves its rooms at once, on every web node.
"""

from __future__ import annotations

import asyncio

import socketio
from sqlalchemy import delete, update

from app.portal.models import User
from testkit.clients import SocketClient, sentinel
from testkit.world import World


def _refused_code(url: str, tok: str) -> str | None:
    async def run() -> str | None:
        socket = SocketClient(url, tok)
        try:
            await socket.connect()
        except socketio.exceptions.ConnectionError:
            return str(socket.connect_error["data"]["code"])
        await socket.close()
        return None
    return asyncio.run(run())


def test_a_token_whose_user_was_deleted_is_refused(world: World) -> None:
    uid, tok = world.api.user("client")
    with world.system.factory() as session, session.begin():
        session.execute(delete(User).where(User.id == uid))
    response = world.api.request("GET", f"/api/streams/user-{uid}/events", token=tok)
    assert response.status_code == 401, response.text
    assert _refused_code(world.url, tok) == "token_invalid"


def test_a_token_whose_role_changed_is_refused(world: World) -> None:
    uid, tok = world.api.user("admin")
    with world.system.factory() as session, session.begin():
        session.execute(update(User).where(User.id == uid).values(role="client"))
    response = world.api.request("GET", "/api/admin/outbox", token=tok)
    assert response.status_code == 401, response.text
    assert _refused_code(world.url, tok) == "token_invalid"


def test_only_admins_change_a_projects_technicians(world: World) -> None:
    response = world.api.request("PATCH", f"/api/projects/{world.project}",
                                 token=world.token("technician"), json={"technicianIds": []})
    assert response.status_code == 403, response.text


def test_a_removed_technician_leaves_the_project_rooms_on_every_node(world: World) -> None:
    second = world.system.add_web()
    client_id, client_tok = world.api.user("client")
    tech_id, tech_tok = world.api.user("technician")
    project = world.api.project(client_id, [tech_id])
    ticket = world.api.ticket(project)

    async def run() -> tuple[SocketClient, SocketClient]:
        tech = SocketClient(second.url, tech_tok)
        client = SocketClient(second.url, client_tok)
        for socket in (tech, client):
            await socket.connect()
            assert (await socket.call("join-project", project))["ok"]
            assert (await socket.call("join-ticket", ticket))["ok"]
        try:
            removed = world.api.request("PATCH", f"/api/projects/{project}",
                                        json={"technicianIds": []})  # on the first node
            assert removed.status_code == 200, removed.text
            assert removed.json()["technicianIds"] == []
            await client.wait_count("project-updated", 1)
            world.api.ok("PATCH", f"/api/projects/{project}", json={"progress": 42})
            world.api.ok("POST", f"/api/tickets/{ticket}/messages", json={"message": "hi"})
            await client.wait_count("project-updated", 2)
            await client.wait_count("new-message", 1)
            await sentinel(world.api, tech, tech_id)  # what the node sent tech before is in
            again = await tech.call("join-project", project)
            assert again["ok"] is False and again["error"]["code"] == "not_found"
        finally:
            await tech.close()
            await client.close()
        return tech, client

    tech, _client = asyncio.run(run())
    assert [e.payload["progress"] for e in tech.named("project-updated")] in ([], [0])
    assert tech.named("new-message") == []
