"""The bench run's environment: its own Socket.IO channels, Celery queue, secret, database.

Imported first by `bench.__main__`, before anything reads settings, so the processes the
bench starts (and the bench process itself) never talk to a real deployment or to a test
run on the same Redis.
"""

from __future__ import annotations

import os
import uuid

from testkit.env import isolate, pg_admin_url

# A child process started by the bench (a writer process) inherits the run it belongs to.
RUN = os.environ.get("BENCH_RUN") or uuid.uuid4().hex[:10]
os.environ["BENCH_RUN"] = RUN
SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"
CHANNEL = f"herald-bench-{RUN}"
# The relay benchmark publishes on a channel nobody listens to, so that the raw PUBLISH
# ceiling and the relay are measured under the same conditions (no web node decoding).
RELAY_CHANNEL = f"herald-bench-{RUN}-relay"
QUEUE = f"herald-bench-{RUN}"
RELAY_QUEUE = f"herald-bench-{RUN}-relay"  # the relay benchmark's own worker

isolate(channel=CHANNEL, queue=QUEUE, secret=SECRET, rate="1000000/minute",
        max_connections=100000)  # a bench reconnects one user many times a minute
REDIS_URL = os.environ["REDIS_URL"]
PG_ADMIN_URL = pg_admin_url("BENCH_PG_URL", "TEST_PG_URL")
