"""The Celery app: Redis broker, late acks, no results, the beat schedule (pruning)."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

from app import logs
from app.settings import get_settings

settings = get_settings()

celery_app = Celery("herald", broker=settings.redis_url,
                    include=["workers.tasks", "workers.sweeper"])
celery_app.conf.update(
    task_default_queue=settings.celery_queue,
    # A killed worker must not lose its task: ack after running, requeue on worker loss.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_acks_on_failure_or_timeout=True,
    worker_prefetch_multiplier=4,
    # See Settings.worker_remote_control: a worker must survive Redis going away.
    worker_enable_remote_control=settings.worker_remote_control,
    task_ignore_result=True,
    result_backend=None,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    broker_transport_options={"socket_connect_timeout": 2, "socket_timeout": 5,
                              "visibility_timeout": 3600},
    broker_pool_limit=10,
    worker_hijack_root_logger=False,
    # Our handler writes JSON lines to stderr; Celery must not re-log them as warnings.
    worker_redirect_stdouts=False,
    timezone="UTC",
    # Workers sweep the outbox themselves (workers/sweeper.py); beat only prunes.
    beat_schedule={
        "prune": {"task": "herald.prune", "schedule": 24 * 3600.0},
    },
    # Creates the schedule file's directory: `--schedule var/...` works on a fresh checkout.
    beat_scheduler="workers.beat:HeraldScheduler",
)


@setup_logging.connect
def _setup_logging(**_kwargs: Any) -> None:
    """Herald's one-line JSON logs in workers and beat too (instead of Celery's format)."""
    logs.setup(settings.log_level)
