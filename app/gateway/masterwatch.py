"""On a Redis Sentinel URL: the web node's listener must be on the sentinels' master.

A listening connection that opened on a master the sentinels have since replaced (a
killed master restarted at once comes back as an empty master until they reconfigure it)
never fails, and hears nothing the relay publishes on the new master
(app/core/sentinelmaster.py). `watch_master` checks, every CHECK_EVERY seconds, the
listener's address against the sentinels' master; when they differ it closes the
connection, so the listener sees a lost subscription like any other: it subscribes again
(on the master the sentinels name now) and catches every room up from the event table
(app/gateway/manager.py). Not run on other URLs; asking the sentinels never blocks the
event loop (redis.asyncio) nor for more than CHECK_EVERY seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.core.sentinelmaster import sentinel_pool, stale_address_async

log = logging.getLogger("herald.gateway")
CHECK_EVERY = 1.0  # seconds between two checks (a stale listener is dropped within ~that)


def needs_watch(sub: Any) -> bool:
    """Whether `sub` (a redis-py PubSub, or a cluster's ShardedPubSub) is a Sentinel's."""
    return sentinel_pool(getattr(sub, "connection_pool", None))


async def watch_master(sub: Any, every: float = CHECK_EVERY) -> None:
    """Close `sub`'s connection once it is found off the sentinels' master, then return."""
    while True:
        await asyncio.sleep(every)
        connection = sub.connection
        if connection is None or not connection.is_connected:
            continue
        try:
            async with asyncio.timeout(every):
                master = await stale_address_async(sub.connection_pool, connection)
        except TimeoutError:  # the sentinels are slow to answer: ask again next time
            continue
        if master is not None:
            log.warning("socketio listener not on the sentinels' master listener=%s:%s "
                        "master=%s:%s", connection.host, connection.port, *master)
            await connection.disconnect()
            return


__all__ = ["CHECK_EVERY", "needs_watch", "watch_master"]
