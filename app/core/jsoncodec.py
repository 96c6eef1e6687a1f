"""Fast JSON for the hot paths (relay, replay), exact for every value the stdlib handles.

orjson is several times faster than the standard library, but it refuses to encode
integers beyond 64 bits and silently *decodes* them as floats. Encoding falls back to
the standard library when orjson refuses; decoding uses it whenever the text holds a
run of 19 or more digits (where a 64-bit integer could overflow) or orjson fails.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_DIGITS = re.compile(r"\d{19}")
_compact = json.JSONEncoder(separators=(",", ":")).encode


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return _compact(value).encode()


def loads(text: str) -> Any:
    """The value of a JSON text, as `json.loads` would give it."""
    if _LONG_DIGITS.search(text):
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
