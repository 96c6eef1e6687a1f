"""The workers' Celery app: app.outbox.taskqueue's recipe, configured when Celery first
reads its configuration (a worker or beat starting), so that importing this reads no settings."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging

from app.core import logs
from app.core.settings import Settings, get_settings
from app.outbox.taskqueue import make_celery


def worker_settings() -> Settings:
    """The settings of this worker or beat process (read from the environment on first use)."""
    return get_settings()


celery_app = make_celery(worker_settings, include=["workers.tasks", "workers.sweeper"])


@setup_logging.connect
def _setup_logging(**_kwargs: Any) -> None:
    """Herald's one-line JSON logs in workers and beat too (instead of Celery's format)."""
    logs.setup(worker_settings().log_level)
