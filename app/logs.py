"""One structured line per thing that happened: `ts level logger message key=value ...`."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """A JSON object per line: ts, level, logger, msg (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            # the whole traceback, still one line once JSON-escaped
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(getattr(h, "_herald", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._herald = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's loggers keep their own plain-text handlers unless told otherwise.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # Per-task and per-tick chatter (the sweep runs every second) stays out of INFO:
    # Herald's own relay lines say what happened.
    for noisy in ("socketio", "engineio", "httpx", "uvicorn.access", "celery.app.trace",
                  "celery.worker.strategy", "celery.beat", "kombu"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
