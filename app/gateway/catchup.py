"""After a lost Redis subscription: catch every room of this node up from the event table.

Live pub/sub is at most once: whatever the relay published while this node was not
subscribed never reaches its sockets. Disconnecting them would make clients recover,
but a Socket.IO disconnect from the server is final for the official clients (no
automatic reconnection), and closing every transport at once is a reconnect storm.
So the node repairs the gap itself, room by room (every room's channel is subscribed
again first, app/gateway/rooms.py): it waits for any replay in progress
on the room (the per-(socket, stream) replay locks), gates the room's sockets, and sends
each of them the events after the room's mark (the offset through which all of them were
sent the stream, app/gateway/ordering.py) as a replay does (app/gateway/replay.py,
`Replayer.catch_up`): page by page from the shared page reads (one database read and one
encoding per page for the whole room), at the pace that socket reads, its gate holding the
live events meanwhile (bounded: what it drops is read from the table), then what the gate
held, closing it on a floor. Sockets go concurrently, `PARALLEL_FLUSHES` at once: a slow
reader slows only itself, and a large gap never overflows its send queue (it is not
closed for it). Order per socket holds; a socket may see an event twice (clients
de-duplicate by (stream, offset)) but never misses one.

If a room cannot be caught up (database down, events pruned), its sockets' transports
are closed — an engine.io close, never a Socket.IO disconnect — so that their clients
reconnect with their positions and recover (or learn that they cannot).
"""

from __future__ import annotations

import asyncio
import logging

from app.gateway.manager import HeraldRedisManager
from app.gateway.replay import Replayer
from app.gateway.sio import HeraldServer

log = logging.getLogger("herald.gateway")
PARALLEL_ROOMS = 8


class CatchUp:
    """Catches the rooms of one Socket.IO server up after a resubscription."""

    def __init__(self, *, sio: HeraldServer, manager: HeraldRedisManager,
                 replayer: Replayer) -> None:
        self.sio = sio
        self.manager = manager
        self.replayer = replayer

    async def all_rooms(self) -> None:
        rooms = self.manager.stream_rooms()
        log.warning("catching up after a lost subscription rooms=%d sockets=%d", len(rooms),
                    len({sid for sids in rooms.values() for sid in sids}))
        limit = asyncio.Semaphore(PARALLEL_ROOMS)

        async def one(room: str) -> None:
            async with limit:
                await self.room(room)
        await asyncio.gather(*(one(room) for room in rooms))

    async def room(self, room: str) -> None:
        held: list[asyncio.Lock] = []
        sids: list[str] = []
        try:
            for sid in self.manager.members(room):
                lock = self.replayer.lock(sid, room)
                await lock.acquire()  # a replay in progress on (sid, room) ends first
                held.append(lock)
            sids = [s for s in self.manager.members(room) if self.manager.is_connected(s, "/")]
            after = self.manager.ordering.mark(room)
            if not sids:
                return
            if after is None:
                raise LookupError(f"no mark for {room}")
            for sid in sids:
                self.manager.open_gate(sid, room)
            # The room's channel is subscribed again (or lost again: another catch-up
            # follows) before the table is read: nothing falls between the two.
            await self.manager.subscribed([room])
            last = await self.replayer.catch_up(room, sids, after)
            self.manager.ordering.set_mark(room, last)
            if last > after:
                log.info("caught up room=%s after=%d last=%d sockets=%d", room, after, last,
                         len(sids))
        except Exception as exc:
            log.error("catch-up failed room=%s sockets=%d error=%s", room, len(sids),
                      type(exc).__name__)
            for sid in sids:
                await self.sio.close_transport(sid)
        finally:
            for lock in held:
                if lock.locked():
                    lock.release()

