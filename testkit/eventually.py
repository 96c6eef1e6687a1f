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

    def check(self) -> None:
        if time.monotonic() >= self.deadline:
            raise AssertionError(_message(self.what))


def eventually(check: Callable[[], T], what: What = "timed out", timeout: float = 30.0,
               interval: float = 0.05, ignoring: Errors = ()) -> T:
    limit = _Bound(timeout, what)
    while True:
        value: T | None
        try:
            value = check()
        except ignoring:
            value = None
        if value:
            return value
        limit.check()
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
    limit = _Bound(timeout, what)
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except ignoring:
            value = None
        if value:
            return value
        limit.check()
        await asyncio.sleep(interval)


__all__ = ["eventually", "eventually_async"]
