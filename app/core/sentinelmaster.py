"""Is a connection on the master the sentinels name? (Redis Sentinel URLs only.)

redis-py asks the sentinels for the master when a connection *opens*, never again while
it stays open: a connection made to a master that is then replaced keeps working. That
happens when a killed master is restarted at once (systemd, Kubernetes): it comes back
as an empty *master* until the sentinels reconfigure it as a replica (seconds later),
while they promote the replica. A listener still subscribed there hears nothing the
relay publishes on the new master, and a publish there reaches nobody listening on the
new one; neither connection fails. `ROLE` cannot tell (the stale server says "master"):
only the sentinels can, so the connection's address is compared with theirs.

`stale_address` (blocking clients: the relay's publisher) and `stale_address_async`
(the web node's listener) return the master's address when `connection` is on another
server, None when it is on the master or when the pool is not a Sentinel's or the
sentinels name no master now (a failover under way: nothing better to go to).
"""

from __future__ import annotations

from typing import Any

import redis

Address = tuple[str, int]


def sentinel_pool(pool: Any) -> bool:
    """Whether `pool` is a Sentinel's master pool (redis-py's SentinelConnectionPool)."""
    return getattr(pool, "sentinel_manager", None) is not None and \
        getattr(pool, "is_master", False)


def _compare(connection: Any, master: Any) -> Address | None:
    here = (str(connection.host), int(connection.port))
    named = (str(master[0]), int(master[1]))
    return None if here == named else named


def stale_address(pool: Any, connection: Any) -> Address | None:
    """The sentinels' master if `connection` (of the Sentinel pool `pool`) is elsewhere."""
    if not sentinel_pool(pool):
        return None
    try:
        master = pool.sentinel_manager.discover_master(pool.service_name)
    except (redis.RedisError, OSError):
        return None
    return _compare(connection, master)


async def stale_address_async(pool: Any, connection: Any) -> Address | None:
    """`stale_address` for redis.asyncio's Sentinel pools."""
    if not sentinel_pool(pool):
        return None
    try:
        master = await pool.sentinel_manager.discover_master(pool.service_name)
    except (redis.RedisError, OSError):
        return None
    return _compare(connection, master)


__all__ = ["Address", "sentinel_pool", "stale_address", "stale_address_async"]
