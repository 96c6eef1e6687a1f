"""Per-user rate limits (send-message, typing, joins, connections, HTTP writes) over the
`limits` library.

Moving windows kept in Redis, so every web node counts the same user together. A user
past a limit gets `RateLimited` (an error ack `rate_limited` with `retryAfter`, or a
429). When Redis cannot be reached the call is allowed: a limit is a guard against
floods, not a reason to refuse everyone while Redis restarts.

On the event loop, the hits of one loop turn (a connect storm: one per connect) go to
Redis together: one pipeline of the `limits` storage's own moving-window script
(`EVALSHA`, same keys, same script), not a round trip each (`HitBatch`). Each hit's
outcome is its own; a hit that arrives while a pipeline is out goes in the next one.
Where the storage is not a plain redis-py client (Redis Cluster) or lacks what this
needs, each hit goes through `limits` as before.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import redis.asyncio as aioredis
from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter as AsyncLimiter
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import NoScriptError

from app.core.errors import RateLimited
from app.core.redisurls import parse_redis_url
from app.core.settings import Settings

log = logging.getLogger("herald.ratelimit")
KINDS = ("message", "typing", "join", "connect", "write", "inbox")


def rules(settings: Settings) -> dict[str, list[RateLimitItem]]:
    return {"message": parse_many(settings.rate_messages),
            "typing": parse_many(settings.rate_typing),
            "join": parse_many(settings.rate_joins),
            "connect": parse_many(settings.rate_connects),
            "write": parse_many(settings.rate_writes),
            "inbox": parse_many(settings.rate_inbox)}


def _storage(redis_url: str, *, is_async: bool, prefix: str) -> Any:
    """The `limits` storage for a Redis, a Sentinel's master or a Redis Cluster URL."""
    target = parse_redis_url(redis_url)
    options: dict[str, Any] = {"key_prefix": prefix, "socket_connect_timeout": 1,
                               "socket_timeout": 1}
    if target.kind == "redis":
        uri = redis_url
    else:
        auth = ""
        if target.options.get("password"):
            auth = f"{target.options.get('username', '')}:{target.options['password']}@"
        hosts = ",".join(f"{host}:{port}" for host, port in target.nodes)
        if target.kind == "sentinel":
            uri = f"redis+sentinel://{auth}{hosts}/{target.service}"
            options.update(use_replicas=False, db=target.options.get("db", 0),
                           sentinel_kwargs={"socket_connect_timeout": 1, "socket_timeout": 1})
        else:
            uri = f"redis+cluster://{auth}{hosts}"
    if is_async:
        return storage_from_string(f"async+{uri}", implementation="redispy", **options)
    return storage_from_string(uri, **options)


class HitBatch:
    """`await batch.hit(key, limit, expiry)`: the `limits` moving-window acquire of one
    entry (True: under the limit, counted), sent with every other hit of this loop turn
    in one pipeline."""

    def __init__(self, bridge: Any) -> None:
        self.bridge = bridge  # limits' RedispyBridge: its client, key prefix and script
        self.script = bridge.lua_acquire_moving_window
        self.pipelines = 0  # pipelines sent (tests, diagnostics)
        self._pending: list[tuple[str, int, int, asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, storage: Any) -> HitBatch | None:
        """A batch over `storage` (a limits RedisStorage), or None where it cannot."""
        bridge: Any = getattr(storage, "bridge", None)
        script = getattr(bridge, "lua_acquire_moving_window", None)
        if not (isinstance(getattr(script, "sha", None), str)
                and callable(getattr(bridge, "prefixed_key", None))
                and callable(getattr(bridge, "get_connection", None))):
            return None
        try:
            client = bridge.get_connection()
        except Exception:
            return None
        return cls(bridge) if type(client) is aioredis.Redis else None

    async def hit(self, key: str, limit: int, expiry: int) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((self.bridge.prefixed_key(key), limit, expiry, future))
        if self._task is None:
            self._task = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._send(batch)
        finally:
            self._task = None

    async def _send(self, batch: list[tuple[str, int, int, asyncio.Future[bool]]]) -> None:
        try:
            pipe = self.bridge.get_connection().pipeline(transaction=False)
            now = time.time()
            for key, limit, expiry, _ in batch:
                pipe.evalsha(self.script.sha, 1, key, now, limit, expiry, 1)
            self.pipelines += 1
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (key, limit, expiry, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, NoScriptError):  # Redis restarted
                try:
                    result = await self.script([key], [time.time(), limit, expiry, 1])
                except Exception as exc:
                    result = exc
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(bool(result))


def _retry_after(reset_time: float) -> int:
    return max(1, math.ceil(reset_time - time.time()))


class RateLimits:
    """`await check(kind, user)` in the gateway; `check_sync` in threaded HTTP routes."""

    def __init__(self, settings: Settings, *, redis_url: str, prefix: str) -> None:
        self.rules = rules(settings)
        self.prefix = prefix
        self._async = AsyncLimiter(_storage(redis_url, is_async=True, prefix=prefix))
        self.batch = HitBatch.of(self._async.storage)
        self._sync_url = redis_url
        self._sync: MovingWindowRateLimiter | None = None

    async def check(self, kind: str, user: Any) -> None:
        """Count one `kind` call by `user`; RateLimited if that passes one of the limits."""
        for item in self.rules[kind]:
            try:
                if self.batch is not None:
                    hit = await self.batch.hit(item.key_for(kind, str(user)), item.amount,
                                               item.get_expiry())
                else:
                    hit = await self._async.hit(item, kind, str(user))
                if hit:
                    continue
                stats = await self._async.get_window_stats(item, kind, str(user))
            except Exception as exc:  # Redis away: allow, say so once per call
                log.warning("rate limit unchecked kind=%s error=%s", kind, type(exc).__name__)
                return
            raise _limited(kind, item, stats.reset_time)

    def check_sync(self, kind: str, user: Any) -> None:
        if self._sync is None:
            try:  # a Sentinel or Cluster storage asks Redis at once: away, allow
                self._sync = MovingWindowRateLimiter(
                    _storage(self._sync_url, is_async=False, prefix=self.prefix))
            except Exception as exc:
                log.warning("rate limit unchecked kind=%s error=%s", kind, type(exc).__name__)
                return
        for item in self.rules[kind]:
            try:
                if self._sync.hit(item, kind, str(user)):
                    continue
                stats = self._sync.get_window_stats(item, kind, str(user))
            except Exception as exc:
                log.warning("rate limit unchecked kind=%s error=%s", kind, type(exc).__name__)
                return
            raise _limited(kind, item, stats.reset_time)


def _limited(kind: str, item: RateLimitItem, reset_time: float) -> RateLimited:
    retry = _retry_after(reset_time)
    log.info("rate limited kind=%s limit=%s retry_after=%d", kind, item, retry)
    return RateLimited(f"too many {kind} calls: at most {item}; retry in {retry}s",
                       retry_after=retry)


__all__ = ["KINDS", "HitBatch", "RateLimits", "rules"]
