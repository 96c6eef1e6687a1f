"""Thin Celery tasks: decode arguments, take this process's context, call app.outbox."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery.signals import worker_process_shutdown
from sqlalchemy.orm import Session, sessionmaker

from app import logs
from app.db import make_engine, make_session_factory
from app.metrics import relay_meter
from app.outbox import relay as relay_mod
from app.outbox.nudge import clear_due
from app.outbox.publisher import RedisPublisher
from app.outbox.retention import prune_events
from app.settings import Settings, get_settings
from workers.celery_app import celery_app

log = logging.getLogger("herald.worker")


@dataclass
class WorkerContext:
    """Per-process resources, made on first use in each worker process."""

    settings: Settings
    factory: sessionmaker[Session]
    publisher: RedisPublisher
    policy: relay_mod.RelayPolicy


_ctx: WorkerContext | None = None


def context() -> WorkerContext:
    global _ctx
    if _ctx is None:
        settings = get_settings()
        logs.setup(settings.log_level)
        engine = make_engine(settings.database_url, pool_size=2, max_overflow=2,
                             **settings.db_timeouts) \
            if not settings.is_sqlite else make_engine(settings.database_url)
        _ctx = WorkerContext(
            settings=settings,
            factory=make_session_factory(engine),
            publisher=RedisPublisher(settings.sio_redis_url, channel=settings.socketio_channel),
            policy=relay_mod.RelayPolicy(max_attempts=settings.relay_max_attempts,
                                         backoff=settings.relay_backoff,
                                         backoff_cap=settings.relay_backoff_cap),
        )
    return _ctx


@worker_process_shutdown.connect
def _close(**_kwargs: Any) -> None:
    if _ctx is not None:
        _ctx.publisher.close()


def _run(streams: list[str] | None) -> int:
    ctx = context()
    meter = relay_meter(ctx.settings.sio_redis_url, channel=ctx.settings.socketio_channel)
    report = relay_mod.relay(session_factory=ctx.factory, publisher=ctx.publisher,
                             policy=ctx.policy, streams=streams, on_published=meter.published)
    meter.finish(report)
    return report.published


@celery_app.task(name="herald.relay", ignore_result=True, acks_late=True)
def relay(streams: list[str] | None = None) -> int:
    """Relay these streams' pending events (all streams when None)."""
    if streams is not None and (not isinstance(streams, list)
                                or not all(isinstance(s, str) for s in streams)):
        log.warning("relay task ignored malformed argument")
        return 0
    if streams is None:  # a coalesced nudge: later commits may nudge again from now on
        settings = context().settings
        try:
            clear_due(settings.redis_url, settings.celery_queue)
        except Exception as exc:  # the key expires by itself; relay anyway
            log.warning("relay could not clear the due mark error=%s", type(exc).__name__)
    return _run(streams)


@celery_app.task(name="herald.sweep", ignore_result=True, acks_late=True)
def sweep() -> int:
    """Relay whatever a lost nudge, a crash or a retry delay left pending."""
    return _run(None)


@celery_app.task(name="herald.prune", ignore_result=True, acks_late=True)
def prune() -> int:
    """Drop events older than HERALD_RETENTION, keeping heads and epochs."""
    ctx = context()
    return prune_events(ctx.factory, retention=ctx.settings.retention)
