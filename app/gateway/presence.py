"""Which sockets a user has open, on every web node: a Redis set of sids per user.

When a technician is taken off a project, the node that made the change must take
that user's sockets out of the project's rooms on every node. python-socketio's
Redis manager carries room changes between nodes, but by sid (`leave_room` for a sid
that is not local is published and applied by the node that holds it); this set says
which sids. A sid left behind by a crashed node is harmless: leaving a room for an
unknown sid does nothing. Redis being away loses no event, only this bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.core.redisclients import async_redis

log = logging.getLogger("herald.gateway")
TTL = 7 * 24 * 3600  # refreshed at each connect; a user idle that long has no stale sids


class Presence:
    def __init__(self, redis_url: str, *, prefix: str) -> None:
        self.redis = async_redis(redis_url, socket_connect_timeout=1, socket_timeout=1)
        self.prefix = prefix
        # Changes waiting for the next pipeline, in order: (add?, user, sid, done).
        self._changes: list[tuple[bool, int, str, asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    def _key(self, user_id: int) -> str:
        return f"{self.prefix}:sids:{user_id}"

    async def add(self, user_id: int, sid: str) -> None:
        """Record `sid`; returns once it is in Redis (or Redis failed, which is logged)."""
        await self._change(True, user_id, sid)

    async def remove(self, user_id: int, sid: str) -> None:
        await self._change(False, user_id, sid)

    async def _change(self, add: bool, user_id: int, sid: str) -> None:
        """Changes that arrive while a pipeline is out go together, in order, in the next
        one: a connect (or disconnect) storm costs a round trip per batch, not per socket."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._changes.append((add, user_id, sid, done))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        try:
            while self._changes:
                batch, self._changes = self._changes, []
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for add, user_id, sid, _ in batch:
                            if add:
                                pipe.sadd(self._key(user_id), sid)
                                pipe.expire(self._key(user_id), TTL)
                            else:
                                pipe.srem(self._key(user_id), sid)
                        await pipe.execute()
                except Exception as exc:
                    users = ",".join(sorted({str(u) for _, u, _, _ in batch}))
                    log.warning("presence not recorded changes=%d users=%.200s error=%s",
                                len(batch), users, type(exc).__name__)
                finally:
                    for *_, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._writing = None
            for *_, done in self._changes:  # cancelled (shutdown): nobody waits for ever
                if not done.done():
                    done.set_result(None)
            self._changes = []

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
