"""Stream names: the forms the protocol allows (docs/protocol.md), and event type names."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.core.errors import InvalidInput
from app.core.ids import MAX_ID

# Each role's broadcast stream (a user of that role is joined to it on connect).
ROLE_STREAMS = {"client": "clients", "technician": "technicians", "admin": "admins"}
ROLE_STREAM_NAMES = frozenset(ROLE_STREAMS.values())
# fullmatch everywhere: `$` also matches before a trailing "\n" ("user-2\n" would pass).
_ENTITY = re.compile(r"(user|project|ticket)-([1-9][0-9]{0,9})")
_TYPE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
MAX_TYPE_LENGTH = 100


@dataclass(frozen=True, slots=True)
class StreamName:
    """A parsed stream name: `kind` is user, project, ticket or role; `id` is None for roles."""

    name: str
    kind: str
    id: int | None


def parse_stream(name: object) -> StreamName:
    if not isinstance(name, str):
        raise InvalidInput("stream must be a string", code="invalid_stream")
    if name in ROLE_STREAM_NAMES:
        return StreamName(name, "role", None)
    match = _ENTITY.fullmatch(name)
    if not match or int(match.group(2)) > MAX_ID:
        raise InvalidInput(
            f"unknown stream {name[:100]!r}: expected user-ID, project-ID, ticket-ID, "
            "clients, technicians or admins",
            code="invalid_stream",
        )
    return StreamName(name, match.group(1), int(match.group(2)))


def check_stream(name: object) -> None:
    """`parse_stream`'s refusal, if any, without building the parsed name (a batch checks
    up to a thousand names)."""
    if isinstance(name, str):
        if name in ROLE_STREAM_NAMES:
            return
        match = _ENTITY.fullmatch(name)
        if match and int(match.group(2)) <= MAX_ID:
            return
    parse_stream(name)  # raises InvalidInput


_SHAPE = re.compile(r"(user|project|ticket)-[0-9]{1,30}")


def looks_like_stream(name: object) -> bool:
    """An entity stream's shape whose id is out of range ('project-2147483648'): a name
    nobody can read, answered `recovered: false` rather than ignored."""
    return isinstance(name, str) and _SHAPE.fullmatch(name) is not None


def validate_type(event_type: object) -> str:
    if (
        not isinstance(event_type, str)
        or len(event_type) > MAX_TYPE_LENGTH
        or not _TYPE.fullmatch(event_type)
    ):
        raise InvalidInput(
            "event type must be lower-case words joined by '-' (e.g. project-updated)",
            code="invalid_type",
        )
    return event_type


def user_stream(user_id: int) -> str:
    return f"user-{user_id}"


def project_stream(project_id: int) -> str:
    return f"project-{project_id}"


def ticket_stream(ticket_id: int) -> str:
    return f"ticket-{ticket_id}"
