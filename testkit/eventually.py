"""Waiting for what another process or task will do: one bounded helper, sync and async.

`eventually(check, what, timeout)` calls `check` until it returns something truthy (and
returns it); after `timeout` seconds it fails the test with `what` (a string, or a function
called then, so it can show the state at the end). A bound, never a timing assertion.

`ignoring` names exceptions that count as "not yet" (a server still starting refuses
connections); any other exception from `check` ends the wait at once. `eventually_async`
also takes a coroutine function as `check` (awaited on each try).

For "nothing else arrived", never wait a fixed time: send a sentinel through the same
ordered path after the thing that must not arrive, wait for the sentinel, then assert.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")
What = str | Callable[[], str]
Errors = tuple[type[BaseException], ...]


def _message(what: What) -> str:
    return what() if callable(what) else what


class _Bound:
    """The deadline of one wait (the only deadline arithmetic in the test kit)."""

    def __init__(self, timeout: float, what: What) -> None:
        self.deadline = time.monotonic() + timeout
        self.what = what

    def check(self, error: BaseException | None) -> None:
        """Fails once the deadline passed, from the last ignored exception if any."""
        if time.monotonic() >= self.deadline:
            raise AssertionError(_message(self.what)) from error


def eventually(check: Callable[[], T], what: What = "timed out", timeout: float = 30.0,
               interval: float = 0.05, ignoring: Errors = ()) -> T:
    limit, error = _Bound(timeout, what), None
    while True:
        value: T | None
        try:
            value = check()
        except ignoring as exc:
            value, error = None, exc
        if value:
            return value
        limit.check(error)
        time.sleep(interval)


@overload
async def eventually_async(check: Callable[[], Awaitable[T]], what: What = ...,
                           timeout: float = ..., interval: float = ...,
                           ignoring: Errors = ...) -> T: ...


@overload
async def eventually_async(check: Callable[[], T], what: What = ..., timeout: float = ...,
                           interval: float = ..., ignoring: Errors = ...) -> T: ...


async def eventually_async(check: Callable[[], object], what: What = "timed out",
                           timeout: float = 30.0, interval: float = 0.02,
                           ignoring: Errors = ()) -> object:
    limit, error = _Bound(timeout, what), None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as exc:
            value, error = None, exc
        if value:
            return value
        limit.check(error)
        await asyncio.sleep(interval)


__all__ = ["eventually", "eventually_async"]
