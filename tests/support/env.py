"""The test run's environment: its own Socket.IO channel, Celery queue and secret.

Imported by conftest before anything reads settings, so every process the tests
start (and the test process itself) talks on channels no other run uses.
"""

from __future__ import annotations

import os
import uuid

RUN = uuid.uuid4().hex[:10]
SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

os.environ["HERALD_ENV"] = "test"
os.environ["JWT_SECRET"] = SECRET
os.environ["HERALD_SOCKETIO_CHANNEL"] = f"herald-test-{RUN}"
os.environ["HERALD_CELERY_QUEUE"] = f"herald-test-{RUN}"
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("HERALD_SWEEP_INTERVAL", "0.5")
os.environ.setdefault("HERALD_LOG_LEVEL", "INFO")
# Tables are truncated between modules and user ids start again at 1, while per-user rate
# windows live in Redis for a minute: limits out of reach here, except where a test sets them.
for _name in ("MESSAGES", "TYPING", "JOINS", "CONNECTS"):
    os.environ.setdefault(f"HERALD_RATE_{_name}", "100000/minute")
os.environ.setdefault("HERALD_MAX_CONNECTIONS_PER_USER", "10000")
REDIS_URL = os.environ["REDIS_URL"]
PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
if PG_ADMIN_URL.startswith("postgresql://"):
    PG_ADMIN_URL = PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1)
