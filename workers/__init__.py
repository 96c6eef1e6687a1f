"""Celery workers: `celery -A workers worker` relays the outbox, `celery -A workers beat` sweeps."""

from workers.celery_app import celery_app

app = celery_app
celery = celery_app

__all__ = ["app", "celery", "celery_app"]
