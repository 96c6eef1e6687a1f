"""Validation of Socket.IO handler arguments: anything malformed is an InvalidInput."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.errors import HeraldError, InvalidInput
from app.outbox.streams import parse_stream

MAX_ID = 2**53


def as_id(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a positive integer", code="invalid_argument")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 17:
        value = int(value)
    if not isinstance(value, int) or not 0 < value < MAX_ID:
        raise InvalidInput(f"{name} must be a positive integer", code="invalid_argument")
    return value


@dataclass(frozen=True, slots=True)
class Position:
    """Where a client is in a stream: the last offset it saw and the epoch it saw it in."""

    offset: int
    epoch: str | None


def as_position(value: Any) -> Position | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput("position must be {offset, epoch}", code="invalid_argument")
    offset, epoch = value.get("offset", 0), value.get("epoch")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 2**63:
        raise InvalidInput("position.offset must be a non-negative integer",
                           code="invalid_argument")
    if epoch is not None and (not isinstance(epoch, str) or len(epoch) > 64):
        raise InvalidInput("position.epoch must be a string", code="invalid_argument")
    return Position(offset, epoch)


def id_and_position(data: Any, key: str) -> tuple[int, Position | None]:
    """`id` or `{key: id, position?}`."""
    if isinstance(data, dict):
        if key not in data:
            raise InvalidInput(f"{key} is required", code="invalid_argument")
        return as_id(data[key], key), as_position(data.get("position"))
    return as_id(data, key), None


def id_only(data: Any, key: str) -> int:
    if isinstance(data, dict):
        if key not in data:
            raise InvalidInput(f"{key} is required", code="invalid_argument")
        return as_id(data[key], key)
    return as_id(data, key)


def as_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput("argument must be an object", code="invalid_argument")
    return data


def as_text(value: Any, name: str, *, min_len: int, max_len: int) -> str:
    if not isinstance(value, str) or not min_len <= len(value) <= max_len:
        raise InvalidInput(f"{name} must be a string of {min_len} to {max_len} characters",
                           code="invalid_argument")
    return value


MAX_POSITIONS = 200


def token_from(auth: Any, environ: dict[str, Any]) -> Any:
    if isinstance(auth, dict) and "token" in auth:
        return auth["token"]
    header = environ.get("HTTP_AUTHORIZATION")
    if isinstance(header, str) and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


UNRECOVERABLE = Position(-1, None)  # a malformed position: joined, `recovered: false`


def positions_from(auth: Any) -> dict[str, Position]:
    """`positions` by stream name; names of no known form are ignored."""
    raw = auth.get("positions") if isinstance(auth, dict) else None
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Position] = {}
    for name, value in list(raw.items())[:MAX_POSITIONS]:
        try:
            parse_stream(name)
        except HeraldError:
            continue
        try:
            out[name] = as_position(value) or UNRECOVERABLE
        except HeraldError:
            out[name] = UNRECOVERABLE
    return out
