"""An answer computed at most once a second, whoever asks: for unauthenticated routes that
read the database (`/readyz`, `/metrics`), so that a flood of them costs the database one
query a second, not one per request.

`Recent.get(compute)` answers what `compute()` answered less than `ttl` seconds ago; when
that is older, one caller runs `compute()` and every caller meanwhile awaits that same run
(no stampede when the answer expires under load).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
TTL = 1.0


class Recent(Generic[T]):
    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self._value: T | None = None
        self._at = -float("inf")
        self._running: asyncio.Future[T] | None = None

    async def get(self, compute: Callable[[], Awaitable[T]]) -> T:
        if self._value is not None and time.monotonic() - self._at < self.ttl:
            return self._value
        if self._running is None:
            self._running = asyncio.ensure_future(self._refresh(compute))
        return await asyncio.shield(self._running)

    async def _refresh(self, compute: Callable[[], Awaitable[T]]) -> T:
        try:
            value = await compute()
            self._value, self._at = value, time.monotonic()
            return value
        finally:
            self._running = None


__all__ = ["Recent"]
