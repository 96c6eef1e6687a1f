"""Where the offline send queue keeps chat messages until the server stores them: memory, a JSON
file, or callbacks. Each entry is `{"ticketId", "text", "clientMessageId", "queuedAt"}`, the
same shape as the JavaScript client's outbox."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .storage import write_json_atomically


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A chat message waiting in the outbox; `client_message_id` makes a resend harmless."""

    ticket_id: int
    text: str
    client_message_id: str
    queued_at: str

    @classmethod
    def new(cls, ticket_id: int, text: str, client_message_id: str | None = None
            ) -> QueuedMessage:
        """A fresh entry: a new UUID unless given, queued now (ISO 8601, UTC)."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return cls(ticket_id, text, client_message_id or str(uuid.uuid4()), now)

    def to_dict(self) -> dict[str, Any]:
        return {"ticketId": self.ticket_id, "text": self.text,
                "clientMessageId": self.client_message_id, "queuedAt": self.queued_at}

    @classmethod
    def from_dict(cls, raw: Any) -> QueuedMessage:
        """Raises ValueError for anything but a well-formed entry."""
        if not isinstance(raw, dict):
            raise ValueError("an outbox entry is an object")
        ticket, text, cmid = raw.get("ticketId"), raw.get("text"), raw.get("clientMessageId")
        if not (isinstance(ticket, int) and not isinstance(ticket, bool)
                and isinstance(text, str) and isinstance(cmid, str) and cmid):
            raise ValueError("an outbox entry needs ticketId, text and clientMessageId")
        queued = raw.get("queuedAt")
        return cls(ticket, text, cmid, queued if isinstance(queued, str) else "")


class OutboxStore(Protocol):
    """Loads the queue once at start; saves all of it whenever it changes."""

    def load(self) -> list[QueuedMessage]: ...

    def save(self, messages: Sequence[QueuedMessage]) -> None: ...


def decode_entries(raw: Any) -> list[QueuedMessage]:
    """The well-formed entries of a JSON list, in order; unreadable ones are skipped."""
    out: list[QueuedMessage] = []
    for item in raw if isinstance(raw, list) else []:
        try:
            out.append(QueuedMessage.from_dict(item))
        except ValueError:
            continue
    return out


class MemoryOutbox:
    """The queue for the life of the process (the default)."""

    def __init__(self, initial: Sequence[QueuedMessage] = ()) -> None:
        self.messages: list[QueuedMessage] = list(initial)

    def load(self) -> list[QueuedMessage]:
        return list(self.messages)

    def save(self, messages: Sequence[QueuedMessage]) -> None:
        self.messages = list(messages)


class FileOutbox:
    """The queue in a JSON file (a list of entries), replaced atomically on every change, so
    a process that dies leaves either the old queue or the new one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> list[QueuedMessage]:
        try:
            return decode_entries(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return []
        except ValueError:
            return []  # a corrupt file: nothing to resend

    def save(self, messages: Sequence[QueuedMessage]) -> None:
        write_json_atomically(self.path, [m.to_dict() for m in messages])


class CallbackOutbox:
    """The queue kept by the application: `load()` returns and `save(data)` takes the JSON
    list of entries (e.g. a row in the application's own database)."""

    def __init__(self, load: Callable[[], Sequence[Any] | None],
                 save: Callable[[list[dict[str, Any]]], None]) -> None:
        self._load, self._save = load, save

    def load(self) -> list[QueuedMessage]:
        return decode_entries(list(self._load() or []))

    def save(self, messages: Sequence[QueuedMessage]) -> None:
        self._save([m.to_dict() for m in messages])
