"""Validation of Socket.IO handler arguments: anything malformed is an InvalidInput."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.errors import HeraldError, InvalidInput
from app.core.ids import MAX_ID, MAX_OFFSET, is_canonical_int, is_id
from app.core.text import is_blank
from app.outbox.streams import looks_like_stream, parse_stream


def as_id(value: Any, name: str) -> int:
    """A row id (an int, or its canonical decimal string) within the Integer columns."""
    if isinstance(value, str) and is_canonical_int(value):
        value = int(value)
    if not is_id(value):
        raise InvalidInput(f"{name} must be an integer from 1 to {MAX_ID}",
                           code="invalid_argument")
    assert isinstance(value, int)
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
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
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
    if min_len > 0 and is_blank(value):
        raise InvalidInput(f"{name} must not be blank", code="invalid_argument")
    return value


MAX_POSITIONS = 100  # streams restored per connect (SPEC); the rest are recovered: false
MAX_POSITION_NAMES = 1000  # names looked at in all; beyond, ignored


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
    for name, value in list(raw.items())[:MAX_POSITION_NAMES]:
        try:
            parse_stream(name)
        except HeraldError:
            if not looks_like_stream(name):
                continue  # of no known form: ignored; else recovered: false, not joined
        try:
            out[name] = as_position(value) or UNRECOVERABLE
        except HeraldError:
            out[name] = UNRECOVERABLE
    return out
