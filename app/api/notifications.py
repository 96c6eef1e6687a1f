"""`POST /api/notifications`: admins notify one user or everyone of a role."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator

from app.api.deps import DB, Caller
from app.api.errors import ERROR_RESPONSES
from app.api.portal import Body
from app.core.errors import InvalidInput
from app.core.ids import MAX_ID
from app.core.text import Storable
from app.outbox import shapes
from app.portal import access, notifications

router = APIRouter(prefix="/api", tags=["notifications"], responses=ERROR_RESPONSES)


class NotificationIn(Body):
    userId: Annotated[int | None, Field(gt=0, le=MAX_ID,
                                        description="a user (its user-ID stream)")] = None
    role: Literal["client", "technician", "admin"] | None = Field(
        default=None, description="everyone of a role (clients, technicians, admins stream)")
    type: Literal["success", "error", "info", "warning"]
    title: Annotated[str, Field(min_length=1, max_length=shapes.MAX_TITLE), Storable]
    message: Annotated[str, Field(max_length=shapes.MAX_TEXT), Storable] = ""

    @model_validator(mode="after")
    def one_target(self) -> NotificationIn:
        if (self.userId is None) == (self.role is None):
            raise ValueError("give exactly one of userId and role")
        return self


class NotificationOut(BaseModel):
    id: str
    stream: str
    offset: int


@router.post("/notifications", status_code=201, response_model=NotificationOut)
def notify(body: NotificationIn, who: Caller, db: DB) -> NotificationOut:
    """Send a `notification` to a user's stream or a role stream (admins)."""
    access.require_admin(who)
    if body.userId is not None:
        event = notifications.notify_user(db, body.userId, body.type, body.title, body.message)
    elif body.role is not None:
        event = notifications.notify_role(db, body.role, body.type, body.title, body.message)
    else:  # pragma: no cover - the validator forbids it
        raise InvalidInput("give exactly one of userId and role")
    return NotificationOut(id=event.id, stream=event.stream, offset=event.offset)


__all__ = ["router"]
