"""Payload shapes the protocol defines for some event types (every client relies on them)."""

from __future__ import annotations

from typing import Any

from app.core.errors import InvalidInput

KINDS = ("success", "error", "info", "warning")
MAX_TITLE = 200
MAX_TEXT = 2000


def notification_payload(kind: str, title: str, message: str) -> dict[str, Any]:
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
