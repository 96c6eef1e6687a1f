"""Each worker's own sweep: relay what is pending at start, then every HERALD_SWEEP_INTERVAL.

No single process may be the only path to progress. A nudge can be lost (the broker was
down at commit time, the task died with its worker, the "relay due" key suppressed it)
and a failed publish is retried only when its backoff is due; both wait for a sweep. So
the sweep runs inside every worker, in a thread of the main process started when the
worker is ready, and not only in beat: a worker that starts relays whatever is pending,
and a deployment without beat still retries and recovers. Several workers sweeping is
harmless (streams are claimed with SKIP LOCKED) and cheap (one claim query when idle).

Each completed sweep is recorded in Redis (`/metrics`: herald_relay_seconds_since_sweep).
The thread has its own engine, disposed in forked pool children (SQLAlchemy's rule for
connection pools across fork), so it never shares a connection with a task.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_session_factory
from app.core.settings import Settings
from app.outbox import relay as relay_mod
from app.outbox.meter import relay_meter
from app.outbox.publisher import RedisPublisher
from workers.celery_app import worker_settings

log = logging.getLogger("herald.sweeper")


class Sweeper:
    """A daemon thread relaying every `interval` seconds until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interval = settings.sweep_interval
        engine = make_engine(settings.database_url, pool_size=1, max_overflow=1,
                             **settings.db_timeouts) \
            if not settings.is_sqlite else make_engine(settings.database_url)
        os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
        self.engine = engine
        self.factory: sessionmaker[Session] = make_session_factory(engine)
        self.publisher = RedisPublisher(settings.sio_redis_url, channel=settings.socketio_channel)
        self.policy = relay_mod.RelayPolicy(max_attempts=settings.relay_max_attempts,
                                            backoff=settings.relay_backoff,
                                            backoff_cap=settings.relay_backoff_cap)
        self.meter = relay_meter(settings.sio_redis_url, channel=settings.socketio_channel)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="herald-sweeper", daemon=True)
        self.failing = False

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        self.thread.join(timeout)
        self.publisher.close()
        self.meter.redis.close()
        self.engine.dispose()

    def sweep(self) -> relay_mod.RelayReport:
        """One relay run over every stream; recorded as a sweep when it went to the end."""
        report = relay_mod.relay(session_factory=self.factory, publisher=self.publisher,
                                 policy=self.policy, on_published=self.meter.published)
        self.meter.finish(report)
        if report.transport_down is None:
            self.meter.swept(time.time())
        return report

    def _loop(self) -> None:
        log.info("sweeper started interval=%.2fs", self.interval)
        while not self.stopped.is_set():
            try:
                report = self.sweep()
                log.debug("sweep done events=%d", report.published)
                if self.failing:
                    log.warning("sweeper recovered")
                self.failing = False
            except Exception as exc:  # the database is away: try again next interval
                if not self.failing:
                    log.warning("sweep failed error=%s", type(exc).__name__)
                self.failing = True
            self.stopped.wait(self.interval)


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
