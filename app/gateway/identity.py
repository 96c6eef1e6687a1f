"""Identities of open sockets, checked again while they stay open.

A socket's identity (user, role) is checked against the user's row at connect. A user
deleted, or whose role changed, afterwards would keep the rooms and rights of the old
identity on the sockets it holds; a token's expiry would never be enforced on them. So:

- each socket gets a timer at its token's `exp` that closes its transport;
- every `every` seconds the node reads the rows of the users with sockets on it (one
  `IN` query per 1,000 users, on a worker thread) and closes the transports of the
  sockets whose user is gone or whose role is no longer the token's.

Every node does this for its own sockets, so a change takes effect everywhere within
`every` seconds. A closed transport is not a Socket.IO disconnect: the client reconnects
with its token, which the connect check then refuses (or accepts, with a new token).
A database that is away skips a pass (logged); it never closes sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import UNAVAILABLE
from app.portal.auth import Principal
from app.portal.models import User

log = logging.getLogger("herald.gateway")
CHUNK = 1000


class Identities:
    def __init__(self, factory: sessionmaker[Session], close: Callable[[str], Awaitable[None]],
                 *, every: float = 5.0, alive: Callable[[str], bool] = lambda sid: True
                 ) -> None:
        self.factory = factory
        self.close = close
        self.alive = alive  # whether a socket is still connected (else it is forgotten)
        self.every = every
        self.passes = 0  # checks run (tests, diagnostics)
        self._sockets: dict[str, tuple[int, str, asyncio.TimerHandle | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def add(self, sid: str, who: Principal, expires: float | None) -> None:
        """Watch `sid`, connected as `who` with a token valid until `expires` (Unix time)."""
        assert who.user_id is not None
        loop = asyncio.get_running_loop()
        timer = (loop.call_later(max(0.0, expires - time.time()), self._expired, sid)
                 if expires is not None else None)
        self.remove(sid)
        self._sockets[sid] = (who.user_id, who.role, timer)
        if self._task is None and self.every > 0:
            self._task = asyncio.create_task(self._run())

    def remove(self, sid: str) -> None:
        entry = self._sockets.pop(sid, None)
        if entry is not None and entry[2] is not None:
            entry[2].cancel()

    def __len__(self) -> int:
        return len(self._sockets)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _expired(self, sid: str) -> None:
        if sid in self._sockets:
            log.info("token expired on an open socket, transport closed sid=%s", sid)
            self._drop([sid])

    def _drop(self, sids: Iterable[str]) -> None:
        for sid in sids:
            self.remove(sid)
            task = asyncio.ensure_future(self.close(sid))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def check(self) -> int:
        """One pass: close the sockets whose user is gone or changed role; how many."""
        for sid in [sid for sid in self._sockets if not self.alive(sid)]:
            self.remove(sid)  # gone without a disconnect handler (closed mid-connect)
        users = {user for user, _, _ in self._sockets.values()}
        if not users:
            return 0
        try:
            roles = await asyncio.to_thread(self._roles, sorted(users))
        except UNAVAILABLE as exc:
            log.warning("identity check skipped: database unavailable error=%s",
                        type(exc).__name__)
            return 0
        self.passes += 1
        # Only the users read: a socket that connected while they were read (a connect
        # storm) is not a user who vanished; the next pass reads it.
        stale = [sid for sid, (user, role, _) in self._sockets.items()
                 if user in users and roles.get(user) != role]
        if stale:
            log.info("identity changed on open sockets, transports closed sockets=%d",
                     len(stale))
            self._drop(stale)
        return len(stale)

    def _roles(self, users: list[int]) -> dict[int, str]:
        roles: dict[int, str] = {}
        with self.factory() as session, session.begin():
            for i in range(0, len(users), CHUNK):
                rows = session.execute(select(User.id, User.role)
                                       .where(User.id.in_(users[i:i + CHUNK])))
                roles.update({int(uid): str(role) for uid, role in rows})
        return roles

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.check()
            except Exception:  # pragma: no cover - never let the watch die silently
                log.exception("identity check failed")


__all__ = ["Identities"]
