"""Notifications: `notification` events to one user's stream or to a role stream."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound
from app.models import ROLE_STREAMS, User
from app.outbox.streams import user_stream
from app.outbox.tables import EventRecord
from app.outbox.writer import append

KINDS = ("success", "error", "info", "warning")
MAX_TITLE = 200
MAX_TEXT = 2000


def payload(kind: str, title: str, message: str) -> dict[str, Any]:
    """The protocol's `notification` payload, validated."""
    if kind not in KINDS:
        raise InvalidInput(f"notification type must be one of {', '.join(KINDS)}",
                           code="invalid_notification")
    if not isinstance(title, str) or not 1 <= len(title) <= MAX_TITLE:
        raise InvalidInput(f"title must be 1 to {MAX_TITLE} characters",
                           code="invalid_notification")
    if not isinstance(message, str) or len(message) > MAX_TEXT:
        raise InvalidInput(f"message must be at most {MAX_TEXT} characters",
                           code="invalid_notification")
    return {"type": kind, "title": title, "message": message}


def notify_user(session: Session, user_id: int, kind: str, title: str,
                message: str = "") -> EventRecord:
    """A notification on `user-{id}` (the user must exist)."""
    body = payload(kind, title, message)
    if session.get(User, user_id) is None:
        raise NotFound(f"user {user_id} not found")
    return append(session, user_stream(user_id), "notification", body)


def notify_role(session: Session, role: str, kind: str, title: str,
                message: str = "") -> EventRecord:
    """A notification to every connected user of a role: `clients`, `technicians`, `admins`."""
    body = payload(kind, title, message)
    stream = ROLE_STREAMS.get(role)
    if stream is None:
        raise InvalidInput("role must be client, technician or admin", code="invalid_role")
    return append(session, stream, "notification", body)
