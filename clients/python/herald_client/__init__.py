"""Herald's Python client: `Subscriber` (resuming, de-duplicating, gap-repairing event
stream for a user, with per-type callbacks, the user's inbox and an offline send queue
for chat messages) and `Publisher` /
`AsyncPublisher` (idempotent, retrying, for services)."""

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
from herald_client.inbox import Inbox
from herald_client.outbox_store import (
    CallbackOutbox,
    FileOutbox,
    MemoryOutbox,
    OutboxStore,
    QueuedMessage,
)
from herald_client.publisher import AsyncPublisher, Publisher
from herald_client.retry import Backoff
from herald_client.storage import CallbackStore, FileStore, MemoryStore, PositionStore
from herald_client.subscriber import Subscriber
from herald_client.types import Event, EventSpec, Meta, Position, Published

__all__ = [
    "AsyncPublisher",
    "AuthError",
    "Backoff",
    "CallbackOutbox",
    "CallbackStore",
    "Conflict",
    "Event",
    "EventSpec",
    "FileOutbox",
    "FileStore",
    "Forbidden",
    "Gone",
    "HeraldError",
    "History",
    "Inbox",
    "Invalid",
    "MemoryOutbox",
    "MemoryStore",
    "Meta",
    "NotFound",
    "OutboxStore",
    "Position",
    "PositionStore",
    "Published",
    "Publisher",
    "QueuedMessage",
    "RateLimited",
    "ServerError",
    "Subscriber",
    "TooLarge",
    "Unavailable",
]
