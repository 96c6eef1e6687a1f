"""Redis names: every key, channel, list and Celery queue Herald uses starts here.

A deployment's names all start with its namespace (`HERALD_NAMESPACE`, by default
derived from the database name), so deployments sharing a Redis never see each other's
events, typing, presence, rate limits, counters or wake-ups:

- the Socket.IO channel: `<namespace>:socketio` (HERALD_SOCKETIO_CHANNEL names it
  exactly instead);
- the Celery queue: `<namespace>:celery` (HERALD_CELERY_QUEUE names it exactly instead);
- every key of a channel or a queue: `key(channel_or_queue, kind)`, e.g.
  `<namespace>:socketio:presence`, `<namespace>:celery:relay-wake`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from sqlalchemy.engine import make_url

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_NAMESPACE = 100


def derive_namespace(database_url: str) -> str:
    """The default namespace: the database's name (PostgreSQL), or a SQLite file's stem and
    a hash of its absolute path (two checkouts' `var/herald.db` differ); the same for every
    process of a deployment, whatever host name it reaches the database by."""
    url = make_url(database_url)
    name = url.database or ""
    if url.get_backend_name() == "sqlite":
        if not name or name == ":memory:":
            return "herald-memory"
        path = Path(name).expanduser().resolve()
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
        return f"{clean(path.stem) or 'herald'}-{digest}"
    return clean(name) or "herald"


def clean(name: str) -> str:
    """`name` with anything but letters, digits, `_`, `.` and `-` replaced by `-`."""
    return _UNSAFE.sub("-", name).strip("-")[:MAX_NAMESPACE]


def channel(namespace: str) -> str:
    """The default Socket.IO channel of `namespace`."""
    return f"{namespace}:socketio"


def queue(namespace: str) -> str:
    """The default Celery queue of `namespace`."""
    return f"{namespace}:celery"


def key(base: str, kind: str) -> str:
    """The Redis key of `kind` that belongs to channel or queue `base` (which starts with
    the namespace unless it was named explicitly)."""
    return f"{base}:{kind}"


__all__ = ["channel", "clean", "derive_namespace", "key", "queue"]
