"""Clients as users have them: a Socket.IO client that records events, and the HTTP API."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import socketio

from app.portal.auth import mint
from testkit.eventually import eventually_async


def token(user_id: int | str, role: str, email: str | None = None,
          ttl: timedelta = timedelta(hours=1)) -> str:
    """A token signed with this run's JWT_SECRET (set by testkit.env.isolate)."""
    return mint(secret=os.environ["JWT_SECRET"], sub=str(user_id),
                email=email or f"{role}{user_id}@test", role=role, ttl=ttl)


def user_token(factory: Any, role: str, email: str | None = None) -> str:
    """A token for a new user of `role` stored in the database (a token's user must exist)."""
    from app.portal import projects

    email = email or f"{role}-{time.monotonic_ns()}@test"
    with factory() as session, session.begin():
        user = projects.create_user(session, email=email, role=role, name=role)
        return token(user.id, role, email)


@dataclass
class Received:
    name: str
    args: tuple[Any, ...]

    @property
    def payload(self) -> Any:
        return self.args[0] if self.args else None

    @property
    def meta(self) -> dict[str, Any] | None:
        return self.args[1] if len(self.args) > 1 else None


@dataclass
class SocketClient:
    """A real python-socketio AsyncClient over a real websocket; records what it receives."""

    url: str
    token: str | None
    positions: dict[str, Any] | None = None
    events: list[Received] = field(default_factory=list)
    connect_error: Any = None

    def __post_init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)

        @self.sio.on("*")  # type: ignore[misc]
        async def any_event(name: str, *args: Any) -> None:
            self.events.append(Received(name, args))

        @self.sio.event  # type: ignore[misc]
        async def connect_error(data: Any) -> None:
            self.connect_error = data

    async def connect(self) -> None:
        auth: dict[str, Any] = {}
        if self.token is not None:
            auth["token"] = self.token
        if self.positions is not None:
            auth["positions"] = self.positions
        await self.sio.connect(self.url, auth=auth, transports=["websocket"],
                               wait_timeout=10)

    async def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        if data is None:
            return await self.sio.call(event, timeout=timeout)
        return await self.sio.call(event, data, timeout=timeout)

    def named(self, name: str) -> list[Received]:
        return [e for e in self.events if e.name == name]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        """Until `predicate()` holds; TimeoutError (naming the last events) if it does not."""
        try:
            await eventually_async(
                predicate, lambda: f"condition not met; received {len(self.events)} events: "
                                   f"{[e.name for e in self.events][-20:]}",
                timeout=timeout, interval=0.01)
        except AssertionError as failed:
            raise TimeoutError(str(failed)) from None

    async def wait_count(self, name: str, count: int, timeout: float = 10) -> list[Received]:
        await self.wait_for(lambda: len(self.named(name)) >= count, timeout)
        return self.named(name)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


class Api:
    """The HTTP API of a running web node, as an admin (or any token)."""

    def __init__(self, base_url: str, admin_token: str) -> None:
        self.base = base_url
        self.admin = admin_token
        self.http = httpx.Client(base_url=base_url, timeout=10)

    def request(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        tok = self.admin if token is None else token
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        return self.http.request(method, path, headers=headers, **kw)

    def ok(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        response = self.request(method, path, token, **kw)
        assert response.status_code < 300, (response.status_code, response.text)
        return response.json()

    def user(self, role: str, email: str | None = None) -> tuple[int, str]:
        email = email or f"{role}-{time.monotonic_ns()}@test"
        user = self.ok("POST", "/api/users", json={"email": email, "role": role, "name": role})
        return user["id"], token(user["id"], role, email)

    def project(self, client_id: int, technician_ids: list[int] | None = None) -> int:
        body = {"name": "P", "clientId": client_id, "technicianIds": technician_ids or []}
        return int(self.ok("POST", "/api/projects", json=body)["id"])

    def ticket(self, project_id: int) -> int:
        return int(self.ok("POST", "/api/tickets",
                           json={"projectId": project_id, "subject": "S"})["id"])

    def close(self) -> None:
        self.http.close()


async def sentinel(api: Api, socket: SocketClient, user_id: int) -> None:
    """A notification to `user_id`, awaited on `socket` (one of that user's): the relay
    publishes it after whatever was committed before, and a node sends a socket its events
    in the order Redis gave them, so anything else on its way to `socket` is in by now."""
    title = f"sentinel-{uuid.uuid4().hex}"
    api.ok("POST", "/api/notifications",
           json={"userId": user_id, "type": "info", "title": title})
    await socket.wait_for(lambda: any(e.payload.get("title") == title
                                      for e in socket.named("notification")))
