"""The whole path: an admin's PATCH commits a row and its event; a client sees the event."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from testkit.clients import Api, SocketClient
from testkit.system import System

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def project_client(system: System) -> AsyncIterator[tuple[Api, int, int, SocketClient]]:
    """A project, its client, and the client's connected socket: (api, client, project, socket)."""
    api = system.api()
    client_id, client_token = api.user("client")
    project = api.project(client_id)
    socket = SocketClient(system.url, client_token)
    await socket.connect()
    try:
        yield api, client_id, project, socket
    finally:
        await socket.close()


async def test_project_member_receives_project_updated_with_meta(system: System) -> None:
    async with project_client(system) as (api, _client_id, project, socket):
        ack = await socket.call("join-project", project)
        assert ack["ok"] is True and ack["stream"] == f"project-{project}"

        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 40, "status": "active"})

        [event] = await socket.wait_count("project-updated", 1)
        assert event.payload == {"projectId": project, "progress": 40, "status": "active"}
        meta = event.meta
        assert meta is not None
        assert set(meta) == {"id", "stream", "offset", "epoch", "ts"}
        assert meta["stream"] == f"project-{project}" and meta["offset"] == 1
        assert meta["epoch"] == ack["epoch"]
        uuid.UUID(meta["id"])
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", meta["ts"])


async def test_a_client_that_left_the_project_receives_no_more_of_its_events(system: System
                                                                           ) -> None:
    async with project_client(system) as (api, _client_id, project, socket):
        assert (await socket.call("join-project", project))["ok"] is True
        assert (await socket.call("leave-project", project)) == {"ok": True,
                                                                  "stream": f"project-{project}"}
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 5})
        # The notification to the client's own stream is relayed in the same batch, after
        # project-{id} (streams go out in name order): once it is here, the other would be.
        await socket.wait_count("notification", 1)
        assert socket.named("project-updated") == []


async def test_project_update_notifies_the_client_on_its_user_stream(system: System) -> None:
    async with project_client(system) as (api, client_id, project, socket):
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 75})
        [note] = await socket.wait_count("notification", 1)
        assert note.payload["type"] == "info" and note.meta is not None
        assert note.meta["stream"] == f"user-{client_id}"


async def test_outsider_is_refused_the_join_and_receives_nothing(system: System) -> None:
    api = system.api()
    owner_id, owner_token = api.user("client")
    _, outsider_token = api.user("client")
    project = api.project(owner_id)
    owner, outsider = SocketClient(system.url, owner_token), SocketClient(system.url,
                                                                          outsider_token)
    await owner.connect()
    await outsider.connect()
    try:
        assert (await owner.call("join-project", project))["ok"] is True
        ack = await outsider.call("join-project", {"projectId": project})
        assert ack["ok"] is False and ack["error"]["code"] == "not_found"  # as if unknown

        api.ok("PATCH", f"/api/projects/{project}", json={"progress": 10})
        await owner.wait_count("project-updated", 1)
        # the owner got it; give the outsider the same time again, then check
        await owner.wait_count("notification", 1)
        assert outsider.named("project-updated") == []
        assert outsider.sio.connected
    finally:
        await owner.close()
        await outsider.close()
