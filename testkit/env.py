"""A run's own environment (tests or bench): Socket.IO channel, Celery queue, secret, limits.

`isolate()` sets the variables before anything reads settings, so that every process a run
starts (and the run's own process) talks on channels no deployment and no other run uses.
"""

from __future__ import annotations

import os


def isolate(*, channel: str, queue: str, secret: str, rate: str, max_connections: int,
            log_level: str = "INFO") -> None:
    os.environ["HERALD_ENV"] = "test"
    os.environ["JWT_SECRET"] = secret
    os.environ["HERALD_SOCKETIO_CHANNEL"] = channel
    os.environ["HERALD_CELERY_QUEUE"] = queue
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ.setdefault("HERALD_LOG_LEVEL", log_level)
    # Per-user windows live in Redis for a minute while runs reuse user ids: out of reach,
    # except where a test sets them.
    for name in ("MESSAGES", "TYPING", "JOINS", "CONNECTS", "WRITES"):
        os.environ.setdefault(f"HERALD_RATE_{name}", rate)
    os.environ.setdefault("HERALD_MAX_CONNECTIONS_PER_USER", str(max_connections))


def pg_admin_url(*names: str) -> str:
    """The PostgreSQL admin URL from the first of `names` set (psycopg 3 driver)."""
    url = next((os.environ[n] for n in names if os.environ.get(n)),
               "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return url
