"""FastAPI dependencies: the app's context, a transactional session, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.access import check_user_row
from app.auth import Principal, decode
from app.errors import AuthError
from app.settings import Settings


@dataclass
class AppContext:
    """What the web process holds: settings, the engine, sessions, and optional extras."""

    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    extras: dict[str, Any] = field(default_factory=dict)


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


def get_principal(request: Request, ctx: Context) -> Principal:
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
