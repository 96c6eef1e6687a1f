"""Who is in a project's or a ticket's room, across every web node (presence).

Redis holds, per room, one field per (node, user) with at least one socket of that node in
the room, and per room a count of the nodes each user is on; so a second tab (or a second
node) is no new join, and one leave of several is no leave. Each node counts its own
sockets per (room, user) in memory and writes only the transitions 0 → 1 and 1 → 0; the
Lua scripts below say atomically whether that was the user's first (or last) node, and
only then is `presence-join` (or `presence-leave`) emitted to the room.

Nodes beat: each refreshes `alive:<node>` with a TTL of `ttl * 0.6` every `ttl * 0.2`
seconds, on a timer of its own (a beat busy writing thousands of members again or emitting
a dead node's leaves must not make a live node look dead, which had the other nodes sweep
its users out, falsely, in a reconnect storm), and, at each beat, sweeps the members of
nodes whose key expired (whichever node notices first wins; the sweep is one script). A
killed node's users are gone within `ttl`. A node that finds itself swept (a long pause,
Redis lost its data) writes its members again. Reads skip the members of nodes that are no
longer alive, swept or not.

At most REDIS_AT_ONCE of this node's presence scripts are in flight at once, and a swept
node's leaves are published SWEEP_EMITS_AT_ONCE at a time: a connect storm's joins, or a
dead node's thousands of leaves, wait here instead of exhausting the Redis clients'
connection pools (100 connections each: past that redis-py refuses the command, and the
presence change, a rate-limit check or a room emit was lost). The sweep's leaves do not
take the scripts' turns, so the connects that follow a node's death are not held behind
them.

All keys share one hash tag, so the scripts run on Redis Cluster too. Presence is
ephemeral: nothing here is stored in the database or replayed; Redis being away costs the
presence list, never a join.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.core.redisclients import async_redis

log = logging.getLogger("herald.gateway")

Emit = Callable[[str, dict[str, Any], str, str | None], Awaitable[None]]
REDIS_AT_ONCE = 32  # presence scripts in flight at once (the pools hold 100 connections)
SWEEP_EMITS_AT_ONCE = 4  # a swept node's leaves published at once (beside the scripts)

_ADD = """
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[4] .. '|' .. ARGV[2])
if redis.call('HSET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], ARGV[3]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then return 1 end
end
return 0
"""

_REMOVE = """
redis.call('SREM', KEYS[4], ARGV[3] .. '|' .. ARGV[2])
if redis.call('HDEL', KEYS[1], ARGV[1] .. '|' .. ARGV[2]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    return 1
  end
end
return 0
"""

# ARGV: prefix, dead node. Returns the "room|user" entries whose user left the room.
_SWEEP = """
local prefix, node = ARGV[1], ARGV[2]
if redis.call('EXISTS', prefix .. ':alive:' .. node) == 1 then return {} end
if redis.call('SREM', prefix .. ':nodes', node) == 0 then return {} end
local entries = redis.call('SMEMBERS', prefix .. ':entries:' .. node)
local left = {}
for _, entry in ipairs(entries) do
  local sep = string.find(entry, '|', 1, true)
  local room, user = string.sub(entry, 1, sep - 1), string.sub(entry, sep + 1)
  if redis.call('HDEL', prefix .. ':members:' .. room, node .. '|' .. user) == 1 then
    local counts = prefix .. ':counts:' .. room
    if redis.call('HINCRBY', counts, user, -1) <= 0 then
      redis.call('HDEL', counts, user)
      table.insert(left, entry)
    end
  end
end
redis.call('DEL', prefix .. ':entries:' .. node)
return left
"""

# KEYS[1]: the room's members; ARGV: prefix. The members on live nodes, once per user.
_READ = """
local fields = redis.call('HGETALL', KEYS[1])
local alive, seen, out = {}, {}, {}
for i = 1, #fields, 2 do
  local sep = string.find(fields[i], '|', 1, true)
  local node, user = string.sub(fields[i], 1, sep - 1), string.sub(fields[i], sep + 1)
  if alive[node] == nil then
    alive[node] = redis.call('EXISTS', ARGV[1] .. ':alive:' .. node)
  end
  if alive[node] == 1 and not seen[user] then
    seen[user] = true
    table.insert(out, fields[i + 1])
  end
end
return out
"""


@dataclass(frozen=True)
class Member:
    user_id: int
    name: str
    role: str

    def to_dict(self) -> dict[str, Any]:
        return {"userId": self.user_id, "name": self.name, "role": self.role}


def tracked(room: str) -> bool:
    """Presence is kept for project and ticket rooms only."""
    return room.startswith(("project-", "ticket-"))


class Roster:
    def __init__(self, redis_url: str, *, prefix: str, ttl: float, emit: Emit,
                 in_room: Callable[[str, str], bool]) -> None:
        self.redis = async_redis(redis_url, socket_connect_timeout=1, socket_timeout=2)
        self.prefix = prefix
        self.ttl = ttl
        self.node = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._emit = emit
        self._in_room = in_room
        self._local: dict[tuple[str, int], set[str]] = {}  # (room, user) → sids here
        self._rooms: dict[str, set[str]] = {}  # sid → its tracked rooms
        self._who: dict[str, Member] = {}  # sid → member
        self._written: set[tuple[str, int]] = set()  # (room, user) recorded in Redis
        self._locks: dict[tuple[str, int], tuple[asyncio.Lock, list[int]]] = {}
        self._beating: asyncio.Task[None] | None = None
        self._living: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(REDIS_AT_ONCE)
        self._sweep_slots = asyncio.Semaphore(SWEEP_EMITS_AT_ONCE)
        self._scripts = {name: self.redis.register_script(text) for name, text in
                         {"add": _ADD, "remove": _REMOVE, "sweep": _SWEEP,
                          "read": _READ}.items()}

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    # -- this node's sockets -------------------------------------------------------------
    async def enter(self, sid: str, member: Member, room: str, skip_sid: str | None = None
                    ) -> None:
        """`sid` is in `room`: the user joins the room if it was their first socket anywhere."""
        if not tracked(room):
            return
        self._start()
        self._who[sid] = member
        self._rooms.setdefault(sid, set()).add(room)
        self._local.setdefault((room, member.user_id), set()).add(sid)
        await self._sync(room, member.user_id, skip_sid)

    async def leave(self, sid: str, room: str) -> None:
        member = self._who.get(sid)
        rooms = self._rooms.get(sid)
        if member is None or rooms is None or room not in rooms:
            return
        rooms.discard(room)
        self._forget_local(sid, room, member.user_id)
        await self._sync(room, member.user_id, None)

    async def gone(self, sid: str) -> None:
        """`sid` disconnected: out of every room at once."""
        member = self._who.pop(sid, None)
        rooms = self._rooms.pop(sid, set())
        if member is None:
            return
        for room in rooms:
            self._forget_local(sid, room, member.user_id)
        await asyncio.gather(*(self._sync(room, member.user_id, None) for room in rooms))

    def _forget_local(self, sid: str, room: str, user_id: int) -> None:
        sids = self._local.get((room, user_id))
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._local[(room, user_id)]

    async def _sync(self, room: str, user_id: int, skip_sid: str | None) -> None:
        """Make Redis say what this node has (a socket of the user in the room, or none);
        changes of one (room, user) go one at a time, in order."""
        key = (room, user_id)
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                try:
                    await self._write(key, skip_sid)
                except Exception as exc:  # the next beat tries again
                    log.warning("presence not recorded room=%s user=%s error=%s", room,
                                user_id, type(exc).__name__)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]

    async def _write(self, key: tuple[str, int], skip_sid: str | None) -> None:
        """One change of (room, user) in Redis (its script in one of the REDIS_AT_ONCE
        slots), then its event if it was the user's first (or last) node. What this node
        has is looked at once the slot is taken (sockets may have come or gone meanwhile)."""
        room, user_id = key
        keys = [self._key("members", room), self._key("counts", room),
                f"{self.prefix}:nodes", self._key("entries", self.node)]
        async with self._slots:
            sids = self._local.get(key)
            if bool(sids) == (key in self._written):
                return
            member = self._who[next(iter(sids))] if sids else None
            if member is not None:
                changed = await self._scripts["add"](
                    keys=keys, args=[self.node, user_id, json.dumps(member.to_dict()), room])
                self._written.add(key)
            else:
                changed = await self._scripts["remove"](keys=keys,
                                                        args=[self.node, user_id, room])
                self._written.discard(key)
        if changed and member is not None:
            await self._emit("presence-join", {"stream": room, "user": member.to_dict()}, room,
                             skip_sid)
        elif changed:
            await self._emit("presence-leave", {"stream": room, "userId": user_id}, room, None)

    # -- reads ---------------------------------------------------------------------------
    async def members(self, room: str) -> list[dict[str, Any]]:
        """The users with a socket in `room` on a live node, once each ([] if Redis is away)."""
        self._start()
        try:
            raw = await self._scripts["read"](keys=[self._key("members", room)],
                                              args=[self.prefix])
        except Exception as exc:
            log.warning("presence not read room=%s error=%s", room, type(exc).__name__)
            return []
        members = [json.loads(item) for item in raw]
        return sorted(members, key=lambda m: (str(m.get("name", "")), m.get("userId", 0)))

    # -- beats ---------------------------------------------------------------------------
    def _start(self) -> None:
        if self._beating is None:
            self._beating = asyncio.create_task(self._every(self.beat, "presence beat failed"))
            self._living = asyncio.create_task(
                self._every(self.live, "presence liveness not refreshed"))

    async def _every(self, step: Callable[[], Awaitable[None]], failed: str) -> None:
        """`step` every fifth of the TTL, each on its own timer (see module); a failure
        is logged and the next turn tries again."""
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s node=%s error=%s", failed, self.node, type(exc).__name__)
            await asyncio.sleep(self.ttl * 0.2)

    async def live(self) -> None:
        await self.redis.set(self._key("alive", self.node), "1",
                             px=max(1, int(self.ttl * 600)))

    async def beat(self) -> None:
        """Say this node is alive, write again what was lost, sweep the dead nodes."""
        alive_ms = max(1, int(self.ttl * 600))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key("alive", self.node), "1", px=alive_ms)
            pipe.sismember(f"{self.prefix}:nodes", self.node)
            pipe.smembers(f"{self.prefix}:nodes")
            _, known, nodes = await pipe.execute()
        if not known and self._written:
            log.warning("presence lost node=%s members=%d: writing them again", self.node,
                        len(self._written))
            self._written.clear()
        self._reconcile()
        await asyncio.gather(*(self._sync(*key, None) for key in
                               set(self._local).symmetric_difference(self._written)))
        others = [n.decode() if isinstance(n, bytes) else str(n) for n in nodes]
        others = [n for n in others if n != self.node]
        if others:
            exists = await asyncio.gather(*(self.redis.exists(self._key("alive", n))
                                            for n in others))
            for node, alive in zip(others, exists, strict=True):
                if not alive:
                    await self._sweep(node)

    def _reconcile(self) -> None:
        """Sockets taken out of a room behind the gateway's back (a revocation applied by
        pub/sub) leave it here too."""
        for sid, rooms in list(self._rooms.items()):
            for room in [r for r in rooms if not self._in_room(sid, r)]:
                member = self._who.get(sid)
                rooms.discard(room)
                if member is not None:
                    self._forget_local(sid, room, member.user_id)
            if not rooms:  # (a socket that entered again re-adds itself)
                self._rooms.pop(sid, None)
                self._who.pop(sid, None)

    async def _sweep(self, node: str) -> None:
        left = await self._scripts["sweep"](keys=[f"{self.prefix}:nodes"],
                                            args=[self.prefix, node])
        log.info("presence swept node=%s left=%d", node, len(left))
        rooms: dict[str, list[int]] = {}
        for entry in left:
            room, _, user = (entry.decode() if isinstance(entry, bytes) else entry).partition("|")
            rooms.setdefault(room, []).append(int(user))

        async def leaves(room: str, users: list[int]) -> None:
            for user in users:
                async with self._sweep_slots:
                    await self._emit("presence-leave", {"stream": room, "userId": user}, room,
                                     None)
        # The rooms side by side, SWEEP_EMITS_AT_ONCE emits in flight.
        await asyncio.gather(*(leaves(room, users) for room, users in rooms.items()))

    async def close(self) -> None:
        """A clean stop: out of every room now (not after the TTL)."""
        for task in (self._beating, self._living):
            if task is not None:
                task.cancel()
        for sid in list(self._who):
            await self.gone(sid)
        try:
            await self.redis.delete(self._key("alive", self.node))
        except Exception as exc:
            log.warning("presence not closed node=%s error=%s", self.node, type(exc).__name__)


__all__ = ["Member", "Roster", "tracked"]
