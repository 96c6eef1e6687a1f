"""Turns per key: at most N holders of one key at once (one user's connects on a node)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class Turns:
    """`async with turns.turn(key)`: waits while `per_key` others hold `key`.

    A flood of one user's connects then waits on itself instead of taking every database
    thread from other users. A key's entry is dropped when nobody holds or waits for it.
    """

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._gates: dict[Hashable, tuple[asyncio.Semaphore, int]] = {}

    @asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[None]:
        gate, users = self._gates.get(key, (asyncio.Semaphore(self.per_key), 0))
        self._gates[key] = (gate, users + 1)
        try:
            async with gate:
                yield
        finally:
            gate, users = self._gates[key]
            if users == 1:
                del self._gates[key]
            else:
                self._gates[key] = (gate, users - 1)

    def __len__(self) -> int:
        return len(self._gates)


__all__ = ["Turns"]
