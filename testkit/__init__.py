"""Test support: real databases, real processes (web nodes, Celery workers), real clients."""
