"""The test run's environment: its own Socket.IO channel, Celery queue and secret.

Imported by conftest before anything reads settings, so every process the tests
start (and the test process itself) talks on channels no other run uses.

Every Redis name a test process uses contains its RUN (each pytest-xdist worker has its
own): its channel and queue, `fresh_name()`'s, and the namespaces of its databases
(`herald_t_<RUN>…`); its session deletes the keys naming RUN when it ends
(testkit/leftovers.py).
"""

from __future__ import annotations

import os
import uuid

from testkit.env import isolate, pg_admin_url

RUN = uuid.uuid4().hex[:10]
SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

os.environ.setdefault("HERALD_SWEEP_INTERVAL", "0.5")
os.environ.setdefault("HERALD_HEARTBEAT_INTERVAL", "0.5")  # heartbeats expire after 1.5 s
isolate(channel=f"herald-test-{RUN}", queue=f"herald-test-{RUN}", secret=SECRET,
        rate="100000/minute", max_connections=10000)
REDIS_URL = os.environ["REDIS_URL"]
PG_ADMIN_URL = pg_admin_url("TEST_PG_URL")


def fresh_name(kind: str) -> str:
    """A channel, queue or key prefix of this run no other test uses (it names RUN, so the
    session's end deletes its keys)."""
    return f"herald-test-{RUN}-{kind}-{uuid.uuid4().hex[:8]}"
