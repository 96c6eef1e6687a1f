"""Development-only demo tokens for the `/portal` user picker.

Anyone who reaches these routes may act as any user, admins included: that is their purpose,
so they exist only where that is harmless (`enabled`): under `HERALD_ENV=test`, and under
`development` while the tokens are signed with the built-in development key. In production,
or on a node given its own `JWT_SECRET` without `HERALD_ENV` (which defaults to
development), `/api/dev/*` does not exist (404).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from app.api.deps import DB, Context
from app.api.errors import ERROR_RESPONSES
from app.api.portal import Body, UserOut
from app.core.errors import NotFound
from app.core.settings import DEV_JWT_SECRET, Settings
from app.portal.auth import mint
from app.portal.models import User

router = APIRouter(prefix="/api/dev", tags=["development"], responses=ERROR_RESPONSES)

MAX_USERS = 100
MIN_TTL, MAX_TTL, DEFAULT_TTL = 1, 12 * 3600, 3600


def enabled(settings: Settings) -> bool:
    """Whether this node mints demo tokens (see the module's docstring)."""
    if settings.environment == "test":
        return True
    return settings.environment == "development" and settings.secret == DEV_JWT_SECRET


class DemoUsers(BaseModel):
    users: list[UserOut]


class TokenIn(Body):
    userId: Annotated[int, Field(gt=0, lt=2**31, description="A user's id")]
    ttl: Annotated[int, Field(ge=MIN_TTL, le=MAX_TTL,
                              description="Seconds the token is valid (1 s to 12 h)")] = DEFAULT_TTL


class TokenOut(BaseModel):
    token: str
    expiresAt: str = Field(description="ISO 8601 UTC")
    user: UserOut


def _out(user: User) -> UserOut:
    return UserOut(id=user.id, email=user.email, role=user.role, name=user.name)


@router.get("/users", response_model=DemoUsers)
def demo_users(db: DB) -> DemoUsers:
    """The users one may act as (the first 100 by id: `herald seed`'s demo users first)."""
    users = db.scalars(select(User).order_by(User.id).limit(MAX_USERS))
    return DemoUsers(users=[_out(u) for u in users])


@router.post("/token", response_model=TokenOut)
def demo_token(body: TokenIn, db: DB, ctx: Context) -> TokenOut:
    """A token for a user, valid `ttl` seconds, with the role and email of its record."""
    user = db.get(User, body.userId)
    if user is None:
        raise NotFound(f"user {body.userId} not found")
    ttl = timedelta(seconds=body.ttl)
    expires = datetime.now(UTC) + ttl
    token = mint(secret=ctx.settings.secret, sub=str(user.id), email=user.email, role=user.role,
                 ttl=ttl)
    return TokenOut(token=token, expiresAt=expires.isoformat().replace("+00:00", "Z"),
                    user=_out(user))


__all__ = ["router"]
