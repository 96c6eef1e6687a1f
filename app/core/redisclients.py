"""Redis clients: the one factory for every Redis use, whatever the URL names.

`sync_redis(url)` and `async_redis(url)` make a client for one Redis (`redis://`,
`rediss://`), the master of a Redis Sentinel set (`redis+sentinel://…/db/service`:
the sentinels are asked for the master at each (re)connection, so a failover is followed)
or a Redis Cluster (`redis+cluster://host:port,…`: any reachable nodes; each command goes
to the node owning its key's slot). URLs are read by app/core/redisurls.py.

`quick_redis` makes a side-channel client that fails fast; `SideChannels` holds a web
process's, opened once and closed by the app's lifespan (no request handler creates a
client of its own).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from app.core.redisurls import RedisTarget, is_cluster, parse_redis_url
from app.core.settings import Settings

# What a Sentinel connection itself uses (asking the sentinels who the master is).
_SENTINEL_OPTIONS = ("socket_timeout", "socket_connect_timeout")


def _sentinel_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in _SENTINEL_OPTIONS if k in options}


@dataclass(frozen=True)
class _Family:
    """One flavour of redis-py (blocking or asyncio): its client, Sentinel and cluster."""

    client: Any
    sentinel: str  # module holding `Sentinel`, imported only for a Sentinel URL
    cluster: Any
    node: Any


_SYNC = _Family(redis.Redis, "redis.sentinel", RedisCluster, ClusterNode)
_ASYNC = _Family(aioredis.Redis, "redis.asyncio.sentinel", AsyncRedisCluster,
                 AsyncClusterNode)


def _client(family: _Family, url: str, options: dict[str, Any]) -> Any:
    target = parse_redis_url(url)
    if target.kind == "redis":
        return family.client.from_url(url, **options)
    if target.kind == "sentinel":
        sentinel_class = importlib.import_module(family.sentinel).Sentinel
        kwargs = {**options, **target.options}
        sentinel = sentinel_class(list(target.nodes), sentinel_kwargs=_sentinel_kwargs(kwargs),
                                  **{k: v for k, v in kwargs.items() if k != "db"})
        return sentinel.master_for(str(target.service), db=kwargs.get("db", 0))
    options = {k: v for k, v in options.items() if k != "health_check_interval"}
    return family.cluster(startup_nodes=[family.node(h, p) for h, p in target.nodes],
                          **_cluster_options(target, options))


def sync_redis(url: str, **options: Any) -> Any:
    """A redis-py client for `url` (redis.Redis, a Sentinel's master, or RedisCluster);
    `options` are redis-py connection options (timeouts, retry…)."""
    return _client(_SYNC, url, options)


def async_redis(url: str, **options: Any) -> Any:
    """The asyncio client for `url` (redis.asyncio's Redis, a Sentinel's master, or
    RedisCluster)."""
    return _client(_ASYNC, url, options)


def _cluster_options(target: RedisTarget, options: dict[str, Any]) -> dict[str, Any]:
    # A cluster client follows MOVED and failovers itself: a few quick retries, not none.
    out = {**options, **target.options}
    out.pop("db", None)
    if isinstance(out.get("retry"), Retry):
        out["retry"] = Retry(NoBackoff(), 1)
    return out


def quick_redis(url: str) -> Any:
    """A client that fails at once when Redis is away (redis-py retries for seconds)."""
    return sync_redis(url, socket_timeout=2, socket_connect_timeout=1,
                      retry=Retry(NoBackoff(), 0))


class SideChannels:
    """The quick clients of one process: the Socket.IO queue's Redis and, when it is another
    server, the relay wake-ups' (REDIS_URL). Connections open on first use."""

    def __init__(self, settings: Settings) -> None:
        self.sio = quick_redis(settings.sio_redis_url)
        self.broker = (quick_redis(settings.redis_url)
                       if settings.redis_url != settings.sio_redis_url else None)

    def named(self) -> dict[str, Any]:
        """What /readyz checks: `redis` and, if separate, `broker`."""
        return {"redis": self.sio, **({"broker": self.broker} if self.broker else {})}

    def close(self) -> None:
        for client in self.named().values():
            client.close()


__all__ = ["SideChannels", "async_redis", "is_cluster", "quick_redis", "sync_redis"]
