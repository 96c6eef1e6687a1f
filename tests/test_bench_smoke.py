"""`python -m bench` keeps running: a tiny quick run prints every figure (no timing asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.databases import require_pg
from testkit.processes import ROOT
from testkit.testrun import CI

# Tiny sizes; the relay through a second Celery worker is left to `make bench` (its start
# alone would take a third of this test's time on a loaded two-core machine), and so are a
# second end-to-end writer process (each is a fresh interpreter importing the app) and
# compression beyond a handful of sockets: the run's time is mostly the processes it starts.
TINY = ["--quick", "--reps", "1", "--relay-events", "200", "--relay-streams", "10",
        "--no-celery-relay",
        "--replay", "50", "--replay-reps", "1", "--rate", "20", "--duration", "1",
        "--e2e-reps", "1", "--streams", "2", "--threads", "1", "--updates", "2",
        "--fanout-sockets", "10", "--fanout-events", "2", "--fanout-wide", "15",
        "--fanout-reps", "1", "--compression-sockets", "5", "--compression-events", "2",
        "--storm-sockets", "10", "--storm-missed", "3",
        "--writes-single", "5", "--writes-batches", "1", "--writes-appends", "20",
        "--writes-reps", "1",
        "--scale-small", "50", "--scale-large", "500", "--scale-events", "1000",
        "--scale-reps", "1", "--scale-pg", "both"]


@pytest.mark.timeout(330)
def test_quick_bench_prints_relay_replay_latency_and_fanout_figures(redis_url: str,
                                                              tmp_path: Path) -> None:
    require_pg()
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, "-m", "bench", *TINY, "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    names = {(f["section"], f["name"]) for f in figures}
    for section in ("relay", "replay", "e2e", "update", "fanout", "storm", "writes", "scale"):
        assert any(s == section for s, _ in names), (section, done.stdout)
    if "scale on a sized PostgreSQL skipped" not in done.stdout:  # not root: no server
        assert ("scale-sized", "relay claim, nothing pending at 500") in names, done.stdout
    skipped = [f for f in figures if "skipped" in f["note"]]
    assert not (CI and skipped), skipped  # Node is required under CI=true
    # Memory per socket is an RSS difference: with a dozen sockets a server's collector can
    # make it negative, so only finiteness is asserted there.
    assert all(math.isfinite(f["value"]) and (f["value"] >= 0 or f["section"] == "memory")
               for f in figures if f not in skipped), figures
    assert "ratio relay() / ceiling" in done.stdout
    assert "50 missed events" in done.stdout
    assert "commit -> client p99" in done.stdout
    assert "POST /api/events, batches of 1,000" in done.stdout
    assert "PATCH /api/projects/{id} round trip" in done.stdout
    for line in ("relay claim, nothing pending at 500", "ratio 500 / 50",
                 "POST 1,000 events over 1,000 new streams at 500",
                 "GET /api/admin/outbox, 1,000 pending at 500"):
        assert line in done.stdout, done.stdout
    if not skipped:
        for line in ("ratio Herald / Node (deliveries/s)", "Node socket.io, same JWT check",
                     "memory per idle joined socket", "one event to 15 sockets",
                     "sockets recovered, in order", "of 10; 0 failed",
                     "ratio Herald / Socket.IO (time)"):
            assert line in done.stdout, done.stdout
