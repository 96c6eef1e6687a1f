"""Notifications: `notification` events to one user's stream or to a role stream."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.core.errors import InvalidInput, NotFound
from app.outbox.shapes import notification_payload as payload
from app.outbox.streams import ROLE_STREAMS, user_stream
from app.outbox.tables import EventRecord
from app.outbox.writer import append
from app.portal.models import User


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
