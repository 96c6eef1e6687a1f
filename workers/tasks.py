"""Thin Celery tasks: decode arguments, take this process's context, call app.outbox."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery.signals import worker_process_shutdown
from sqlalchemy.orm import Session, sessionmaker

from app.core import logs
from app.core.db import make_engine, make_session_factory
from app.core.settings import Settings
from app.outbox import relay as relay_mod
from app.outbox.meter import RelayMeter, relay_meter
from app.outbox.publisher import RedisPublisher
from app.outbox.retention import prune_events
from app.outbox.taskqueue import PRUNE_TASK, RELAY_TASK, SWEEP_TASK
from workers.celery_app import celery_app, worker_settings

log = logging.getLogger("herald.worker")


@dataclass
class WorkerContext:
    """Per-process resources, made on first use in each worker process."""

    settings: Settings
    factory: sessionmaker[Session]
    publisher: RedisPublisher
    policy: relay_mod.RelayPolicy
    meter: RelayMeter


_ctx: WorkerContext | None = None


def context() -> WorkerContext:
    global _ctx
    if _ctx is None:
        settings = worker_settings()
        logs.setup(settings.log_level)
        engine = make_engine(settings.database_url, pool_size=2, max_overflow=2,
                             **settings.db_timeouts) \
            if not settings.is_sqlite else make_engine(settings.database_url)
        _ctx = WorkerContext(
            settings=settings,
            factory=make_session_factory(engine),
            publisher=RedisPublisher(settings.sio_redis_url, channel=settings.socketio_channel,
                                     room_channels=settings.room_channels),
            policy=relay_mod.RelayPolicy(max_attempts=settings.relay_max_attempts,
                                         backoff=settings.relay_backoff,
                                         backoff_cap=settings.relay_backoff_cap),
            meter=relay_meter(settings.sio_redis_url, channel=settings.socketio_channel),
        )
    return _ctx


@worker_process_shutdown.connect
def _close(**_kwargs: Any) -> None:
    if _ctx is not None:
        _ctx.publisher.close()
        _ctx.meter.redis.close()


def _run() -> int:
    ctx = context()
    report = relay_mod.relay(session_factory=ctx.factory, publisher=ctx.publisher,
                             policy=ctx.policy, on_published=ctx.meter.published)
    ctx.meter.finish(report)
    return report.published


@celery_app.task(name=RELAY_TASK, ignore_result=True, acks_late=True)
def relay(_streams: object = None) -> int:
    """Relay every stream's pending events now, in this pool process (the argument is
    unused). Commits no longer send it: their nudge wakes the workers' relay threads
    (workers/sweeper.py); operators and the relay benchmark may."""
    return _run()


@celery_app.task(name=SWEEP_TASK, ignore_result=True, acks_late=True)
def sweep() -> int:
    """Relay whatever a lost nudge, a crash or a retry delay left pending."""
    return _run()


@celery_app.task(name=PRUNE_TASK, ignore_result=True, acks_late=True)
def prune() -> int:
    """Drop events older than HERALD_RETENTION, keeping heads and epochs."""
    ctx = context()
    return prune_events(ctx.factory, retention=ctx.settings.retention)
