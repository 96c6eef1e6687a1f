"""Sharded pub/sub on a Redis Cluster (issue 16.4): batches that span slots and masters.

One `SSUBSCRIBE` may only name channels of one slot (Redis answers CROSSSLOT otherwise),
and a channel lives on the master owning its slot. The web node's listener
(`ShardedPubSub`) groups each batch by slot and master; the relay's publisher groups each
batch's `SPUBLISH`es per master. Here 60 streams, spread over the three masters of a local
cluster, are subscribed in one batch and published in one batch: every event arrives, each
stream's in order; a web node's own SPUBLISH (typing) reaches them too; and each master
confirms the unsubscriptions.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from app.core.channels import room_channel
from app.core.redisclients import async_redis
from app.gateway.shards import ShardedPubSub
from app.outbox.publisher import RedisPublisher
from app.outbox.tables import EventRecord
from testkit.redis_cluster import LocalCluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
CHANNEL = "herald-test-shards"
STREAMS = [f"user-{i}" for i in range(60)]


def events(rounds: int) -> list[EventRecord]:
    ts = datetime.now(UTC)
    return [EventRecord(f"id-{r}-{s}", s, r, "e", "notification", {"n": r}, ts)
            for r in range(1, rounds + 1) for s in STREAMS]


async def collect(sub: ShardedPubSub, count: int) -> list[tuple[str, int]]:
    got: list[tuple[str, int]] = []
    async for message in sub.listen():
        if message["type"] == "smessage":
            meta = json.loads(message["data"])["data"][1]
            got.append((meta["stream"], meta["offset"]))
            if len(got) == count:
                return got
    return got


async def test_a_batch_over_many_slots_is_subscribed_and_published_per_master(
        redis_cluster: LocalCluster) -> None:
    redis_cluster.wait_healthy()
    cluster = async_redis(redis_cluster.url)
    slots = {redis_cluster.client().keyslot(room_channel(CHANNEL, s)) for s in STREAMS}
    masters = {redis_cluster.client().get_node_from_key(room_channel(CHANNEL, s)).name
               for s in STREAMS}
    assert len(slots) == len(STREAMS) and len(masters) == 3  # the batch spans every master
    sub = ShardedPubSub(cluster, {})
    publisher = RedisPublisher(redis_cluster.url, channel=CHANNEL)
    try:
        await sub.subscribe(CHANNEL)
        await sub.ssubscribe(*[room_channel(CHANNEL, s) for s in STREAMS])
        confirmed = 0
        async for message in sub.listen():  # Redis confirms every channel, on its master
            if message["type"] == "ssubscribe":
                confirmed += 1
                if confirmed == len(STREAMS):
                    break
        reading = asyncio.create_task(collect(sub, 3 * len(STREAMS)))
        await asyncio.to_thread(publisher.publish, events(3))
        got = await asyncio.wait_for(reading, 10)
        for stream in STREAMS:
            assert [o for s, o in got if s == stream] == [1, 2, 3]
        # a web node's own room emits (typing) go through the cluster client's SPUBLISH
        for stream in STREAMS:
            await cluster.spublish(room_channel(CHANNEL, stream), b"typing")
        typing = 0
        async for message in sub.listen():
            if message["type"] == "smessage" and message["data"] == b"typing":
                typing += 1
                if typing == len(STREAMS):
                    break
        await sub.sunsubscribe(*[room_channel(CHANNEL, s) for s in STREAMS])
        left = 0
        async for message in sub.listen():  # each master confirms its channels' leave
            if message["type"] == "sunsubscribe":
                left += 1
                if left == len(STREAMS):
                    break
    finally:
        publisher.close()
        await sub.aclose()
        await cluster.aclose()
