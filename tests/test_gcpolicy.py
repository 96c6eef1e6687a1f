"""The web node's collection policy (app/gateway/gcpolicy.py): survivors frozen after
connects, and what a closed socket leaves (cycles) reclaimed once sockets have closed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from app.gateway.gcpolicy import SocketGC


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # never leave the test process frozen


def test_off_unless_start_up_was_frozen() -> None:
    assert not SocketGC.wanted()
    gc.freeze()
    assert SocketGC.wanted()


def test_connects_freeze_and_closes_collect_what_was_frozen() -> None:
    sockets = [1000]
    policy = SocketGC(lambda: sockets[0], min_churn=10, churn=0.05)
    assert policy.step() == ""
    for _ in range(9):
        policy.opened += 1
    assert policy.step() == ""  # below min_churn
    policy.opened += 1
    # A closed socket's state: a cycle, alive (referenced) when frozen.
    state = Cycle()
    ref = weakref.ref(state)
    assert policy.step() == "frozen"
    assert gc.get_freeze_count() > 0
    del state  # the socket closes: the cycle is garbage, but frozen
    gc.collect()
    assert ref() is not None  # not collected while frozen
    for _ in range(49):
        policy.disconnected()
    assert policy.step() == ""  # 49 < 5 % of 1,000
    policy.disconnected()
    assert policy.step() == "collected"
    assert ref() is None  # reclaimed by the one full collection
    assert gc.get_freeze_count() > 0  # and what lives is frozen again
    assert (policy.opened, policy.closed) == (0, 0)


def test_a_freeze_collects_the_young_garbage_first() -> None:
    """What the connects left as garbage (a cycle no longer referenced, in a young
    generation) is freed by the freeze, not frozen until the next full collection."""
    policy = SocketGC(lambda: 1000, min_churn=1)
    policy.opened = 1
    gc.disable()  # no automatic collection meanwhile: only the policy's
    try:
        left = Cycle()
        ref = weakref.ref(left)
        del left  # garbage, uncollected
        assert ref() is not None
        assert policy.step() == "frozen"
        assert ref() is None
    finally:
        gc.enable()


def test_a_full_collection_at_least_every_max_age() -> None:
    policy = SocketGC(lambda: 10, max_age=0.0)
    assert policy.step() == ""  # nothing happened since: nothing to do
    policy.disconnected()
    assert policy.step() == "collected"
