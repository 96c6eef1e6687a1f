"""Waiting for what another process or task will do: one bounded helper, sync and async.

`eventually(check, what, timeout)` calls `check` until it returns something truthy (and
returns it); after `timeout` seconds it fails the test with `what` (a string, or a function
called then, so it can show the state at the end). A bound, never a timing assertion.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
What = str | Callable[[], str]


def _message(what: What) -> str:
    return what() if callable(what) else what


def eventually(check: Callable[[], T], what: What = "timed out", timeout: float = 30.0,
               interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, _message(what)
        time.sleep(interval)
    return value


async def eventually_async(check: Callable[[], T], what: What = "timed out",
                           timeout: float = 30.0, interval: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, _message(what)
        await asyncio.sleep(interval)
    return value


__all__ = ["eventually", "eventually_async"]
