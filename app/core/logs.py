"""One structured line per thing that happened: `ts level logger message key=value ...`."""

from __future__ import annotations

import json
import logging
import re
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


_SECRET_PARAM = re.compile(r"((?:access_)?token|jwt|auth)=[^&\s\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    """`...?token=eyJ...&EIO=4` -> `...?token=[redacted]&EIO=4`."""
    return _SECRET_PARAM.sub(r"\1=[redacted]", text)


class Redact(logging.Filter):
    """No token in any log line: uvicorn logs a websocket's whole URL, query included."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def setup(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(getattr(h, "_herald", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(Redact())
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
