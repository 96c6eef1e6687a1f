"""The test run's environment: its own Socket.IO channel, Celery queue and secret.

Imported by conftest before anything reads settings, so every process the tests
start (and the test process itself) talks on channels no other run uses.
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
