"""`inbox-mark`: the inbox's marks over Socket.IO (the same rules as POST /api/inbox/...)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.gateway import args
from app.portal import inbox
from app.portal.auth import Principal


def _mark(factory: sessionmaker[Session], who: Principal, change: inbox.Change) -> inbox.Counts:
    with factory() as session, session.begin():
        return inbox.mark(session, who, change)


async def inbox_mark(factory: sessionmaker[Session], who: Principal,
                     data: Any) -> dict[str, Any]:
    """`{action, ids?, all?}` -> `{ok, counts}`; invalid_argument or not_found otherwise
    (then nothing changed). The `inbox-updated` event reaches every socket of the user."""
    body = args.as_object(data)
    change = inbox.parse_change(body.get("action"), body.get("ids"), body.get("all"))
    counts = await asyncio.to_thread(_mark, factory, who, change)
    return {"ok": True, "counts": counts.to_dict()}


__all__ = ["inbox_mark"]
