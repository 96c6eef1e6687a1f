"""Full garbage collections out of the fan-out's way, on a web node holding many sockets.

Python's collector runs a full (generation 2) collection when the objects that survived
into the oldest generation since the last one pass a quarter of it. Ten thousand idle
sockets are about a million tracked objects: a full collection takes 0.5-1 s, and a
broadcast to all of them (each socket's writer wakes up and leaves a few objects behind)
triggers one every few events. Node's collector is incremental; Python's is not.

So, in a process whose start-up objects were frozen (`python -m app.web`):

- every `every` seconds, once `min_churn` sockets have connected since the last look,
  the young generations are collected (what the connects left as garbage, cycles, is not
  frozen) and `gc.freeze()` moves everything alive into the permanent generation, after
  which full collections only look at what is newer than the sockets;
- frozen objects are never collected, only freed when their count of references drops to
  zero, and a closed socket's objects form cycles (protocol and transport, tasks and
  coroutines): so once `churn` of the sockets (at least `min_churn`) have closed, or
  `max_age` seconds after the last full collection, everything is unfrozen, collected
  once (the one full pause, at a time chosen here, not in a burst) and frozen again.

Closed sockets are thus reclaimed after at most `max_age` seconds or that much churn.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("herald.gateway")


class SocketGC:
    def __init__(self, sockets: Callable[[], int], *, every: float = 5.0, churn: float = 0.05,
                 min_churn: int = 100, max_age: float = 600.0) -> None:
        self.sockets = sockets
        self.every = every
        self.churn = churn
        self.min_churn = min_churn
        self.max_age = max_age
        self.opened = 0
        self.closed = 0
        self.last_full = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def wanted() -> bool:
        """Whether this process froze its start-up objects (the web launcher does)."""
        return gc.get_freeze_count() > 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def connected(self) -> None:
        self.opened += 1
        self.start()

    def disconnected(self) -> None:
        self.closed += 1

    def step(self) -> str:
        """One look: "collected", "frozen" or ""."""
        sockets = self.sockets()
        now = time.monotonic()
        if (self.closed >= max(self.min_churn, self.churn * sockets)
                or (now - self.last_full > self.max_age and (self.opened or self.closed))):
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            log.info("full collection sockets=%d closed=%d found=%d ms=%.0f", sockets,
                     self.closed, found, 1000 * (time.perf_counter() - started))
            self.opened = self.closed = 0
            self.last_full = now
            return "collected"
        if self.opened >= self.min_churn:
            gc.collect(1)  # the young generations' garbage: freed, not frozen
            gc.freeze()
            self.opened = 0
            return "frozen"
        return ""

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                self.step()
            except Exception:  # pragma: no cover - never let the policy die silently
                log.exception("gc policy step failed")


__all__ = ["SocketGC"]
