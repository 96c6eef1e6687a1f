"""Herald's Python client: `Subscriber` (resuming, de-duplicating, gap-repairing event
stream for a user, with per-type callbacks, the user's inbox and an offline send queue
for chat messages) and `Publisher` /
`AsyncPublisher` (idempotent, retrying, for services)."""

from .errors import (
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
from .history import History
from .inbox import Inbox
from .outbox_store import (
    CallbackOutbox,
    FileOutbox,
    MemoryOutbox,
    OutboxStore,
    QueuedMessage,
)
from .publisher import AsyncPublisher, Publisher
from .retry import Backoff
from .storage import CallbackStore, FileStore, MemoryStore, PositionStore
from .subscriber import Subscriber
from .types import Event, EventSpec, Meta, Position, Published

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
