"""Each worker's relay thread: woken by nudges, and a sweep every HERALD_SWEEP_INTERVAL.

A thread of the worker's main process, started when the worker is ready, waits on the
relay's wake-up list in Redis (BLPOP, app/outbox/nudge.py). A commit's nudge wakes it at
once: it relays every pending stream (app.outbox.relay.relay) and waits again. When
nobody wakes it for HERALD_SWEEP_INTERVAL seconds it relays anyway: that is the sweep.

No single process may be the only path to progress. A nudge can be lost (Redis was
down at commit time, its worker died) and a failed publish is retried only when its
backoff is due; both wait for a sweep. So the sweep runs inside every worker, and not
only in beat: a worker that starts relays whatever is pending, and a deployment without
beat still retries and recovers. Several workers relaying is harmless (streams are
claimed with SKIP LOCKED, each stream stays in order) and spreads the streams over them.

Every 5 s while it relays, and for 15 s after, it VACUUMs the outbox's two queue tables
that hold many dead rows (app/outbox/tidy.py): the claim's cost stays that of what is
pending, whether autovacuum runs or not.

Each completed pass is a sweep, recorded in Redis at most once a second (`/metrics`:
herald_relay_seconds_since_sweep). The thread has its own engine, disposed in forked
pool children (SQLAlchemy's rule for connection pools across fork), so it never shares
a connection with a task.

A second daemon thread writes the worker's heartbeat every HERALD_HEARTBEAT_INTERVAL
(app/outbox/liveness.py): whether the relay thread runs and when its last complete pass
ended, for the operators' console and `herald nodes`; removed when the worker stops.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_session_factory
from app.core.redisclients import quick_redis
from app.core.settings import Settings
from app.outbox import counts, tidy
from app.outbox import relay as relay_mod
from app.outbox.liveness import Heartbeats, HeartbeatThread, process_id
from app.outbox.meter import relay_meter
from app.outbox.nudge import RelayWaker
from app.outbox.publisher import RedisPublisher
from workers.celery_app import worker_settings

log = logging.getLogger("herald.sweeper")

RECORD_EVERY = 1.0  # seconds between two sweep times written to Redis
FLUSH_EVERY = 0.5  # seconds between two writes of the relay's counters while it is busy
FOLD_EVERY = 1.0  # seconds between two folds of the outbox counts (app.outbox.counts)
PAUSE_AFTER_ERROR = 1.0  # seconds to wait after Redis or the database failed a pass


class Sweeper:
    """A daemon thread relaying when nudged, and every `interval` seconds, until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interval = settings.sweep_interval
        # No pre-ping (a round trip per pass): a connection that died with a database
        # restart fails one pass, which discards it (app.outbox.relay), and the next
        # pass connects anew.
        engine = make_engine(settings.database_url, pool_size=1, max_overflow=1,
                             pool_pre_ping=False, **settings.db_timeouts) \
            if not settings.is_sqlite else make_engine(settings.database_url)
        os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
        self.engine = engine
        self.factory: sessionmaker[Session] = make_session_factory(engine)
        self.publisher = RedisPublisher(settings.sio_redis_url, channel=settings.socketio_channel,
                                        room_channels=settings.room_channels)
        self.policy = relay_mod.RelayPolicy(max_attempts=settings.relay_max_attempts,
                                            backoff=settings.relay_backoff,
                                            backoff_cap=settings.relay_backoff_cap)
        self.meter = relay_meter(settings.sio_redis_url, channel=settings.socketio_channel)
        self.waker = RelayWaker(settings.redis_url, settings.celery_queue)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="herald-sweeper", daemon=True)
        self.failing = False
        self.recorded = 0.0
        self.flushed = 0.0
        self.folded = 0.0
        self.tidied = time.monotonic()  # the last look at the queue tables' dead rows
        self.relayed_at: float | None = None  # the last pass that relayed something
        self.passes = 0
        self.woken = 0
        self.last_swept: float | None = None  # Unix time of the last complete pass
        self.heartbeat = HeartbeatThread(
            Heartbeats(quick_redis(settings.sio_redis_url), settings.socketio_channel),
            "worker", process_id(), interval=settings.heartbeat_interval, fields=self._beat)

    def start(self) -> None:
        self.thread.start()
        self.heartbeat.start()

    def _beat(self) -> dict[str, Any]:
        """The worker's heartbeat (app.outbox.liveness): its relay thread and last sweep."""
        return {"host": socket.gethostname(), "pid": os.getpid(),
                "queue": self.settings.celery_queue, "lastSweepAt": self.last_swept,
                "passes": self.passes, "relayThread": self.thread.is_alive()}

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        self.thread.join(timeout)
        self.heartbeat.stop()
        self.heartbeat.heartbeats.client.close()
        self.publisher.close()
        self.meter.redis.close()
        self.waker.close()
        self.engine.dispose()

    def sweep(self) -> relay_mod.RelayReport:
        """One relay run over every stream; recorded as a sweep when it went to the end."""
        report = relay_mod.relay(session_factory=self.factory, publisher=self.publisher,
                                 policy=self.policy, on_published=self.meter.count)
        self.passes += 1
        now = time.time()
        self.meter.finish(report, flush=now - self.flushed >= FLUSH_EVERY)
        if now - self.flushed >= FLUSH_EVERY:
            self.flushed = now
        if report.transport_down is None:
            self.last_swept = now
        if now - self.folded >= FOLD_EVERY:  # the outbox's counted totals stay a few rows
            self.folded = now
            counts.fold_on(self.engine)
        self._tidy(report)
        if report.transport_down is None and now - self.recorded >= RECORD_EVERY:
            self.meter.swept(now)
            self.recorded = now
        return report

    def _tidy(self, report: relay_mod.RelayReport) -> None:
        """Every TIDY_EVERY seconds while this thread relays, and for TIDY_AFTER seconds
        after (PostgreSQL's dead-row counts lag the deletes by up to 10 s on an idle
        connection): VACUUM the queue tables that need it (app.outbox.tidy)."""
        now = time.monotonic()
        if report.published:
            self.relayed_at = now
        if self.relayed_at is None or now - self.tidied < tidy.TIDY_EVERY \
                or self.relayed_at < self.tidied - tidy.TIDY_AFTER:
            return
        self.tidied = now
        tidy.tidy_on(self.engine)

    def _wait(self, deadline: float) -> bool:
        """Until a nudge (True) or `deadline` (False); in steps of at most one second, so
        that stop() is prompt. A Redis that is away makes it a plain wait. The relay's
        counters (kept in the process while busy) are written when it goes idle: no
        wake-up waiting after a pass."""
        while not self.stopped.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                if self.meter.unsent:
                    if self.waker.take():  # busy: the next pass first
                        self.woken += 1
                        return True
                    self.meter.flush()  # idle: the counters go out now
                    self.flushed = time.time()
                if self.waker.wait(min(left, 1.0)):
                    self.woken += 1
                    return True
            except Exception as exc:  # Redis is away: the sweep goes on without nudges
                log.debug("relay wake-up wait failed error=%s", type(exc).__name__)
                self.stopped.wait(min(left, PAUSE_AFTER_ERROR))
        return False

    def _loop(self) -> None:
        log.info("relay thread started sweep_interval=%.2fs", self.interval)
        deadline = time.monotonic()  # sweep at once: relay what is pending at start
        while not self.stopped.is_set():
            self._wait(deadline)
            if self.stopped.is_set():
                break
            try:
                report = self.sweep()
                log.debug("relay pass done events=%d", report.published)
                if self.failing:
                    log.warning("sweeper recovered")
                self.failing = False
                deadline = time.monotonic() + self.interval
            except Exception as exc:  # the database is away: try again shortly
                if not self.failing:
                    log.warning("sweep failed error=%s", type(exc).__name__)
                self.failing = True
                deadline = time.monotonic() + min(self.interval, PAUSE_AFTER_ERROR)


_sweeper: Sweeper | None = None


@worker_ready.connect
def _start(**_kwargs: Any) -> None:
    global _sweeper
    if _sweeper is None:
        _sweeper = Sweeper(worker_settings())
        _sweeper.start()


@worker_shutdown.connect
def _stop(**_kwargs: Any) -> None:
    global _sweeper
    if _sweeper is not None:
        _sweeper.stop()
        _sweeper = None
