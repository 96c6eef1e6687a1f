"""Beat's scheduler: Celery's persistent one, which first creates its file's directory.

`celery beat --schedule var/celerybeat-schedule` otherwise dies on a fresh checkout or
container (no `var/`) with FileNotFoundError from shelve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler


class HeraldScheduler(PersistentScheduler):  # type: ignore[misc]
    """PersistentScheduler that makes the schedule file's parent directory if missing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        filename = kwargs.get("schedule_filename")
        if filename:
            Path(filename).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(*args, **kwargs)
