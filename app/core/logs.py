"""One structured line per thing that happened: `ts level logger message key=value ...`.

What a client can make the server log is bounded: every message is cut at `MAX_MSG`
characters (a client-chosen string is never written whole), a client's malformed
Socket.IO packet is one warning line rather than python-socketio's traceback
(`ClientPacketErrors`), and lines of the loggers clients reach are rate-limited per kind
(`RateLimit`: at most N a second per logger and message, then one count of those dropped).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

MAX_MSG = 2000  # characters of a message
MAX_EXC = 10_000  # characters of a traceback
# Loggers whose lines a client can cause (and so multiply): rate-limited.
CLIENT_FACING = ("engineio", "socketio", "uvicorn.error", "herald.http", "herald.gateway",
                 "herald.api", "herald.ratelimit")


def bounded(text: str, limit: int) -> str:
    """`text`, cut at `limit` characters with a note of how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


class JsonFormatter(logging.Formatter):
    """A JSON object per line: ts, level, logger, msg (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": bounded(record.getMessage(), MAX_MSG),
        }
        if record.exc_info:
            # the traceback (bounded), still one line once JSON-escaped
            line["exc"] = bounded(self.formatException(record.exc_info), MAX_EXC)
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


class RateLimit(logging.Filter):
    """At most `per_second` lines a second per (logger, message template) of the loggers
    named in `prefixes`; the first line let through after some were dropped says how many."""

    def __init__(self, per_second: int, prefixes: tuple[str, ...] = CLIENT_FACING) -> None:
        super().__init__()
        self.per_second = per_second
        self.prefixes = prefixes
        self.windows: dict[tuple[str, str], list[int]] = {}  # key -> [second, lines, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.per_second <= 0 or not record.name.startswith(self.prefixes):
            return True
        key = (record.name, str(record.msg)[:200])
        second = int(record.created)
        window = self.windows.get(key)
        if window is not None and window[0] == second:
            if window[1] >= self.per_second:
                window[2] += 1
                return False
            window[1] += 1
            return True
        dropped = window[2] if window is not None else 0
        if len(self.windows) >= 10_000:  # many kinds of lines: start counting afresh
            self.windows.clear()
        self.windows[key] = [second, 1, 0]
        if dropped:
            message = bounded(record.getMessage(), MAX_MSG)
            record.msg = f"{message} [{dropped} lines like this one suppressed]"
            record.args = None
        return True


class ClientPacketErrors(logging.Filter):
    """python-socketio raises on a client's malformed packet (`49`, bad JSON) and engine.io
    logs that with its traceback: one warning line instead. Other errors keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _raised_decoding_a_packet(exc):
            record.msg = "bad packet from a client: %s: %s"
            record.args = (type(exc).__name__, bounded(str(exc), 200))
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _raised_decoding_a_packet(exc: BaseException) -> bool:
    """A ValueError raised inside python-socketio (its decoding), JSON's frames aside."""
    if not isinstance(exc, ValueError):
        return False
    files = []
    tb = exc.__traceback__
    while tb is not None:
        files.append(Path(tb.tb_frame.f_code.co_filename).as_posix())
        tb = tb.tb_next
    while files and ("/json/" in files[-1] or files[-1].endswith("engineio/json.py")):
        files.pop()
    return bool(files) and "/socketio/" in files[-1]


def setup(level: str = "INFO", rate: int = 100) -> None:
    root = logging.getLogger()
    if any(getattr(h, "_herald", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(Redact())
    handler.addFilter(RateLimit(rate))
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
    # python-socketio's and engine.io's server loggers: a level of their own (else each
    # server adds a plain-text handler of its own, a second copy of every line), and a
    # client's bad packet one line.
    for name in ("socketio.server", "engineio.server"):
        sio_logger = logging.getLogger(name)
        sio_logger.setLevel(logging.WARNING)
        sio_logger.handlers = []
        sio_logger.addFilter(ClientPacketErrors())
