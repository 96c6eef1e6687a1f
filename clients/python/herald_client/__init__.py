"""Herald's Python client: `Subscriber` (resuming, de-duplicating, gap-repairing event
stream for a user) and `Publisher` / `AsyncPublisher` (idempotent, retrying, for services)."""

from herald_client.errors import (
    AuthError,
    Conflict,
    Forbidden,
    Gone,
    HeraldError,
    Invalid,
    NotFound,
    RateLimited,
    ServerError,
    TooLarge,
    Unavailable,
)
from herald_client.history import History
from herald_client.publisher import AsyncPublisher, Publisher
from herald_client.retry import Backoff
from herald_client.storage import CallbackStore, FileStore, MemoryStore, PositionStore
from herald_client.subscriber import Subscriber
from herald_client.types import Event, EventSpec, Meta, Position, Published

__all__ = [
    "AsyncPublisher",
    "AuthError",
    "Backoff",
    "CallbackStore",
    "Conflict",
    "Event",
    "EventSpec",
    "FileStore",
    "Forbidden",
    "Gone",
    "HeraldError",
    "History",
    "Invalid",
    "MemoryStore",
    "Meta",
    "NotFound",
    "Position",
    "PositionStore",
    "Published",
    "Publisher",
    "RateLimited",
    "ServerError",
    "Subscriber",
    "TooLarge",
    "Unavailable",
]
