"""Celery workers: `celery -A workers worker` relays and sweeps, `celery -A workers beat` prunes."""

from workers.celery_app import celery_app

app = celery_app
celery = celery_app

__all__ = ["app", "celery", "celery_app"]
