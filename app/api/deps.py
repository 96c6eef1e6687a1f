"""FastAPI dependencies: the app's typed context and its lifespan, a transactional session,
the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Protocol

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.errors import AuthError
from app.core.ratelimit import RateLimits
from app.core.redisclients import SideChannels
from app.core.settings import Settings
from app.portal.access import check_user_row
from app.portal.auth import Principal, decode


class NodeStats(Protocol):
    """One web node's numbers at scrape time (app.gateway.node_metrics.NodeSnapshot)."""

    @property
    def node(self) -> str: ...
    @property
    def sockets(self) -> int: ...
    @property
    def rooms(self) -> int: ...
    @property
    def memberships(self) -> int: ...
    @property
    def replayed(self) -> int: ...
    @property
    def refused(self) -> dict[str, int]: ...


class Node(Protocol):
    """What the HTTP API needs of this node's Socket.IO gateway (app.gateway.server.Gateway)."""

    def snapshot(self) -> NodeStats: ...

    async def revoke(self, user_id: int, rooms: list[str]) -> int: ...


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class AppContext:
    """What the web process holds, opened by create_app and closed by `lifespan`."""

    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    redis: SideChannels
    node: Node
    limits: RateLimits | None = None
    closers: list[Closeable] = field(default_factory=list)

    def close(self) -> None:
        """Close what the context opened: side-channel clients, the nudger, the engine."""
        self.redis.close()
        for closer in self.closers:
            closer.close()
        self.engine.dispose()


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    """FastAPI's lifespan: resources are opened by create_app; closed here at shutdown."""
    yield
    get_context_of(api).close()


def get_context_of(api: FastAPI) -> AppContext:
    ctx = api.state.ctx
    assert isinstance(ctx, AppContext)
    return ctx


def get_context(request: Request) -> AppContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, AppContext)
    return ctx


Context = Annotated[AppContext, Depends(get_context)]


def get_db(ctx: Context) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    with ctx.factory() as session, session.begin():
        yield session


# scope="function": commit before the response is sent (the default runs it after: a 2xx
# could precede the commit, or a failed commit). See tests/test_durability.py.
DB = Annotated[Session, Depends(get_db, scope="function")]


# Declares the bearer scheme in OpenAPI (so /docs "Authorize" sends the header); the header
# itself is read below, with Herald's own error codes.
BEARER = HTTPBearer(auto_error=False, bearerFormat="JWT",
                    description="A token from `herald token` (or POST /api/dev/token in "
                                "development)")


def get_principal(request: Request, ctx: Context,
                  _scheme: Annotated[object, Security(BEARER)] = None) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise AuthError("missing bearer token", code="token_missing")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("expected 'Authorization: Bearer <token>'", code="token_invalid")
    who = decode(token.strip(), secret=ctx.settings.secret)
    if who.role != "service":
        with ctx.factory() as session:
            check_user_row(session, who)
    return who


Caller = Annotated[Principal, Depends(get_principal)]
