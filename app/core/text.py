"""Text every supported database can store: no NUL characters, no lone surrogates."""

from __future__ import annotations

from typing import Any

from pydantic import AfterValidator

from app.core.errors import InvalidInput


def storable(value: str) -> bool:
    """False for text PostgreSQL refuses (NUL) or that is not valid Unicode (lone surrogates)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_blank(value: str) -> bool:
    """True for text of nothing but white space (spaces, tabs, newlines, U+3000 ...)."""
    return not value.strip()


def check_text(value: Any, name: str, *, min_len: int, max_len: int,
               code: str = "invalid_argument") -> str:
    """`value` if it is a storable string of `min_len` to `max_len` characters."""
    if not isinstance(value, str) or not min_len <= len(value) <= max_len:
        raise InvalidInput(f"{name} must be a string of {min_len} to {max_len} characters",
                           code=code)
    if not storable(value):
        raise InvalidInput(f"{name} contains NUL or invalid characters", code=code)
    if min_len > 0 and is_blank(value):
        raise InvalidInput(f"{name} must not be blank", code=code)
    return value


def _storable_or_error(value: str) -> str:
    if not storable(value):
        raise ValueError("contains NUL or invalid characters")
    return value


Storable = AfterValidator(_storable_or_error)
"""Pydantic: `Annotated[str, Storable]` refuses text a database cannot store (-> 422)."""


def _not_blank(value: str) -> str:
    if is_blank(value):
        raise ValueError("must not be blank")
    return value


NotBlank = AfterValidator(_not_blank)
"""Pydantic: `Annotated[str, NotBlank]` refuses text of only white space (-> 422)."""
