"""testkit.eventually: the one way tests wait (a bound, never a timing assertion)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from testkit.eventually import eventually, eventually_async


def test_returns_the_first_truthy_value_of_the_check() -> None:
    tries = itertools.count(1)
    assert eventually(lambda: next(tries) >= 3 and "done", interval=0) == "done"


def test_fails_with_what_computed_at_the_end() -> None:
    state = {"seen": 0}

    def check() -> bool:
        state["seen"] += 1
        return False

    with pytest.raises(AssertionError, match=r"^seen [1-9]\d*$"):
        eventually(check, lambda: f"seen {state['seen']}", timeout=0.05, interval=0.01)


def test_ignored_exceptions_mean_not_yet_and_are_the_cause_of_a_timeout() -> None:
    tries = itertools.count(1)

    def refused_twice() -> bool:
        if next(tries) <= 2:
            raise ConnectionRefusedError
        return True

    assert eventually(refused_twice, ignoring=(OSError,), interval=0) is True

    def refused() -> bool:
        raise ConnectionRefusedError("still starting")

    with pytest.raises(AssertionError, match="not up") as failed:
        eventually(refused, "not up", timeout=0.05, interval=0.01, ignoring=(OSError,))
    assert isinstance(failed.value.__cause__, ConnectionRefusedError)


def test_other_exceptions_end_the_wait_at_once() -> None:
    def broken() -> bool:
        raise KeyError("no such thing")

    with pytest.raises(KeyError):
        eventually(broken, timeout=30, ignoring=(OSError,))


def test_the_async_form_awaits_a_coroutine_check_and_takes_a_plain_one() -> None:
    async def run() -> tuple[int, int]:
        tries = itertools.count(1)

        async def ready() -> int:
            await asyncio.sleep(0)
            n = next(tries)
            return n if n >= 3 else 0

        return await eventually_async(ready, interval=0), await eventually_async(lambda: 7)

    assert asyncio.run(run()) == (3, 7)
