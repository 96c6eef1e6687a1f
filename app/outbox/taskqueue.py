"""The Celery app, built from Settings: Redis broker, late acks, no results, beat's schedule.

`make_celery(settings)` is the one recipe. Web nodes and the CLI build one to send relay
tasks (app/outbox/nudge.py); workers/celery_app.py builds the workers' one lazily, so that
importing it reads no settings. Task names are strings here: app never imports workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery

from app.core.settings import Settings

RELAY_TASK = "herald.relay"
SWEEP_TASK = "herald.sweep"
PRUNE_TASK = "herald.prune"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery's configuration for these settings."""
    broker, transport = settings.celery_broker
    return {
        "broker_url": broker,
        "task_default_queue": settings.celery_queue,
        # A killed worker must not lose its task: ack after running, requeue on worker loss.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 4,
        # See Settings.worker_remote_control: a worker must survive Redis going away.
        "worker_enable_remote_control": settings.worker_remote_control,
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"socket_connect_timeout": 2, "socket_timeout": 5,
                                     "visibility_timeout": 3600, **transport},
        "broker_pool_limit": 10,
        "worker_hijack_root_logger": False,
        # Our handler writes JSON lines to stderr; Celery must not re-log them as warnings.
        "worker_redirect_stdouts": False,
        "timezone": "UTC",
        # Workers sweep the outbox themselves (workers/sweeper.py); beat only prunes.
        "beat_schedule": {"prune": {"task": PRUNE_TASK, "schedule": 24 * 3600.0}},
        # Creates the schedule file's directory: `--schedule var/...` works on a fresh checkout.
        "beat_scheduler": "workers.beat:HeraldScheduler",
    }


def make_celery(settings: Settings | Callable[[], Settings], *,
                include: Sequence[str] = ()) -> Celery:
    """A Celery app configured from `settings` (or, lazily, from what the callable returns
    when Celery first reads its configuration)."""
    celery = Celery("herald", include=list(include), set_as_current=False)
    if isinstance(settings, Settings):
        celery.conf.update(celery_config(settings))
    else:
        load = settings
        celery.add_defaults(lambda: celery_config(load()))
    return celery


__all__ = ["PRUNE_TASK", "RELAY_TASK", "SWEEP_TASK", "celery_config", "make_celery"]
