"""One portal per test module: users of every role around one project, on the real system.

Building users over HTTP costs a few requests; truncating and restarting per test costs
far more. Tests that share a world make their own fresh tickets or projects when they
need empty streams, and measure "nothing stored" as a difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from app.outbox.tables import Event, IdempotencyKey
from app.portal.auth import decode
from app.portal.models import Message
from testkit.clients import Api, token
from testkit.system import System, fresh
from testkit.testrun import SECRET

ROLES = ("client", "other-client", "technician", "other-technician", "admin", "service")


@dataclass
class World:
    """A project with its client and technician, outsiders of each role, an admin, a service."""

    system: System
    api: Api
    ids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    project: int = 0
    ticket: int = 0
    intervention: int = 0
    quote: int = 0

    @property
    def url(self) -> str:
        return self.system.url

    def token(self, role: str) -> str:
        return self.tokens[role]

    def counts(self) -> tuple[int, int, int]:
        """(events, messages, idempotency keys) stored right now."""
        with self.system.factory() as session:
            return (session.scalar(select(func.count()).select_from(Event)) or 0,
                    session.scalar(select(func.count()).select_from(Message)) or 0,
                    session.scalar(select(func.count()).select_from(IdempotencyKey)) or 0)

    def fresh_ticket(self) -> int:
        return self.api.ticket(self.project)


def build_world(system: System) -> World:
    fresh(system)
    api = system.api()
    world = World(system, api)
    for role in ROLES[:4]:
        kind = role.removeprefix("other-")
        world.ids[role], world.tokens[role] = api.user(kind, f"{role}@world.test")
    world.tokens["admin"] = system.admin_token
    world.ids["admin"] = int(decode(system.admin_token, secret=SECRET).sub)
    world.tokens["service"] = token("billing", "service", "billing@services.test")
    world.project = api.project(world.ids["client"], [world.ids["technician"]])
    api.project(world.ids["other-client"], [world.ids["other-technician"]])
    world.ticket = api.ticket(world.project)
    world.intervention = api.ok("POST", "/api/interventions",
                                json={"projectId": world.project, "title": "Visit"})["id"]
    world.quote = api.ok("POST", "/api/quotes",
                         json={"clientId": world.ids["client"], "amount": "100.00"})["id"]
    return world
