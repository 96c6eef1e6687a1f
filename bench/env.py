"""The bench run's environment: its own Socket.IO channels, Celery queue, secret, database.

Imported first by `bench.__main__`, before anything reads settings, so the processes the
bench starts (and the bench process itself) never talk to a real deployment or to a test
run on the same Redis.
"""

from __future__ import annotations

import os
import uuid

# A child process started by the bench (bench.relay_loop) inherits the run it belongs to.
RUN = os.environ.get("BENCH_RUN") or uuid.uuid4().hex[:10]
os.environ["BENCH_RUN"] = RUN
SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"
CHANNEL = f"herald-bench-{RUN}"
# The relay benchmark publishes on a channel nobody listens to, so that the raw PUBLISH
# ceiling and the relay are measured under the same conditions (no web node decoding).
RELAY_CHANNEL = f"herald-bench-{RUN}-relay"
QUEUE = f"herald-bench-{RUN}"
RELAY_QUEUE = f"herald-bench-{RUN}-relay"  # the relay benchmark's own worker
NUDGES = f"herald-bench-{RUN}-nudges"  # the relay-loop prototype's wake-up list

os.environ["HERALD_ENV"] = "test"
os.environ["JWT_SECRET"] = SECRET
os.environ["HERALD_SOCKETIO_CHANNEL"] = CHANNEL
os.environ["HERALD_CELERY_QUEUE"] = QUEUE
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("HERALD_LOG_LEVEL", "INFO")  # as in production (Procfile)
# A bench reconnects one user many times a minute: per-user limits out of its way.
for _name in ("MESSAGES", "TYPING", "JOINS", "CONNECTS"):
    os.environ.setdefault(f"HERALD_RATE_{_name}", "1000000/minute")
os.environ.setdefault("HERALD_MAX_CONNECTIONS_PER_USER", "100000")
REDIS_URL = os.environ["REDIS_URL"]
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", os.environ.get(
    "TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
if PG_ADMIN_URL.startswith("postgresql://"):
    PG_ADMIN_URL = PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1)
