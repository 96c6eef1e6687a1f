"""The rate limits' hits of one loop turn go to Redis in one pipeline (app/core/ratelimit.py
`HitBatch`), each still counted and answered on its own, against a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import redis

from app.core.errors import RateLimited
from app.core.ratelimit import RateLimits
from app.core.settings import get_settings
from testkit.testrun import fresh_name


def _limits(redis_url: str, rate: str) -> RateLimits:
    settings = get_settings().model_copy(update={"rate_connects": rate})
    return RateLimits(settings, redis_url=redis_url, prefix=fresh_name("batch"))


async def _outcomes(limits: RateLimits, users: list[int]) -> list[bool]:
    """Each check of `users` at once: True when allowed, False when RateLimited."""
    async def one(user: int) -> bool:
        try:
            await limits.check("connect", user)
        except RateLimited:
            return False
        return True
    return list(await asyncio.gather(*(one(u) for u in users)))


def test_concurrent_hits_go_in_one_pipeline_and_each_is_counted(redis_url: str) -> None:
    limits = _limits(redis_url, "5/minute")
    assert limits.batch is not None
    # 12 connects of user 1 and 3 of user 2 in the same loop turn.
    outcomes = asyncio.run(_outcomes(limits, [1] * 12 + [2] * 3))
    assert outcomes[:12].count(True) == 5  # the window counts every hit of the batch
    assert outcomes[12:] == [True] * 3  # another user's hits are their own
    assert limits.batch.pipelines == 1


def test_a_hit_whose_script_redis_does_not_hold_is_still_counted(redis_url: str) -> None:
    limits = _limits(redis_url, "2/minute")
    batch = limits.batch
    assert batch is not None
    # As after a Redis restart: the script's sha is unknown to Redis (a variant never
    # loaded, rather than SCRIPT FLUSH on a Redis other runs share).
    source = batch.script.script + f"\n-- {uuid.uuid4().hex}".encode()
    batch.script = batch.bridge.get_connection().register_script(source)
    assert not redis.Redis.from_url(redis_url).script_exists(batch.script.sha)[0]
    assert asyncio.run(_outcomes(limits, [7, 7, 7])).count(True) == 2
