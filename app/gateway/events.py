"""Which client events reach a handler, and what the others cost the node.

python-socketio dispatches a client's EVENT packet by its name to whatever handler is
registered under it, including its own reserved ones: an EVENT named `disconnect` ran the
disconnect handler on a socket that stayed open (it then escaped every later room change),
one named `connect` ran the connect handler with client-chosen arguments (another identity).
So a client event reaches a handler only if its name is a string, registered by the
application and not reserved (`RESERVED`: python-socketio's `connect`/`disconnect` and its
catch-all `*`, the client-side reserved names, Socket.IO's own). Every other event is
answered `unknown_event` if it asked for an ack, and touches nothing else.

Unknown events are limited per socket (`per_minute`, a fixed one-minute window): past it
they are answered `rate_limited` with a `retryAfter`. Their log lines come from one
node-wide budget (`LogBudget`), one bounded line each, with the count of lines left out.
"""

from __future__ import annotations

import time
from typing import Any

from app.core.errors import InvalidInput, RateLimited

RESERVED = frozenset({
    "connect", "disconnect", "connect_error", "*",  # python-socketio (server and client)
    "disconnecting", "newListener", "removeListener", "message",  # Socket.IO's own
})


class LogBudget:
    """At most `per_second` lines a second on average, `burst` at once (a token bucket)."""

    def __init__(self, per_second: float = 10.0, burst: int = 20) -> None:
        self.per_second = per_second
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self.suppressed = 0

    def take(self) -> int | None:
        """The number of lines left out since the last one allowed, or None: leave it out."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens < 1:
            self.suppressed += 1
            return None
        self._tokens -= 1
        left_out, self.suppressed = self.suppressed, 0
        return left_out


class UnknownEvents:
    """Per socket: how many unknown events it sent in the current minute."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._counts: dict[str, tuple[float, int]] = {}

    def answer(self, eio_sid: str, event: Any) -> tuple[dict[str, Any], bool]:
        """The ack for one more unknown event of `eio_sid`, and whether it is worth a log
        line (each unknown event is; of those refused, the first of the minute)."""
        now = time.monotonic()
        start, count = self._counts.get(eio_sid, (now, 0))
        if now - start >= 60:
            start, count = now, 0
        self._counts[eio_sid] = (start, count + 1)
        if count >= self.per_minute:
            retry = max(1, int(60 - (now - start)) + 1)
            limited = RateLimited(f"at most {self.per_minute} unknown events a minute",
                                  retry_after=retry)
            return {"ok": False, "error": limited.to_dict()}, count == self.per_minute
        name = event[:100] if isinstance(event, str) else type(event).__name__
        error = InvalidInput(f"unknown event {name!r}", code="unknown_event")
        return {"ok": False, "error": error.to_dict()}, True

    def forget(self, eio_sid: str) -> None:
        self._counts.pop(eio_sid, None)


__all__ = ["RESERVED", "LogBudget", "UnknownEvents"]
