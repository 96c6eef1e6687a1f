"""Herald: an event-sourced notification worker (outbox -> Celery relay -> Socket.IO)."""
