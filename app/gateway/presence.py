"""Which sockets a user has open, on every web node: a Redis set of sids per user.

When a technician is taken off a project, the node that made the change must take
that user's sockets out of the project's rooms on every node. python-socketio's
Redis manager carries room changes between nodes, but by sid (`leave_room` for a sid
that is not local is published and applied by the node that holds it); this set says
which sids. A sid left behind by a crashed node is harmless: leaving a room for an
unknown sid does nothing. Redis being away loses no event, only this bookkeeping.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger("herald.gateway")
TTL = 7 * 24 * 3600  # refreshed at each connect; a user idle that long has no stale sids


class Presence:
    def __init__(self, redis_url: str, *, prefix: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1,
                                             socket_timeout=1)
        self.prefix = prefix

    def _key(self, user_id: int) -> str:
        return f"{self.prefix}:sids:{user_id}"

    async def add(self, user_id: int, sid: str) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.sadd(self._key(user_id), sid)
                pipe.expire(self._key(user_id), TTL)
                await pipe.execute()
        except Exception as exc:
            log.warning("presence not recorded user=%s error=%s", user_id, type(exc).__name__)

    async def remove(self, user_id: int, sid: str) -> None:
        try:
            await self.redis.srem(self._key(user_id), sid)
        except Exception as exc:
            log.warning("presence not cleared user=%s error=%s", user_id, type(exc).__name__)

    async def sids(self, user_id: int) -> list[str]:
        members = await self.redis.smembers(self._key(user_id))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def revoke(self, manager: Any, user_id: int, rooms: list[str]) -> int:
        """Take the user's sockets out of `rooms`: here directly, elsewhere through the
        manager's pub/sub (`leave_room` of a sid that is not local is published)."""
        sids = await self.sids(user_id)
        for sid in sids:
            for room in rooms:
                await manager.leave_room(sid, "/", room)
        log.info("rooms revoked user=%s rooms=%d sockets=%d", user_id, len(rooms), len(sids))
        return len(sids)


__all__ = ["Presence"]
