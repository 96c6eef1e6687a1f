"""The caller's inbox over HTTP: list items with their read state, mark them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.api.deps import DB, Caller, Context
from app.api.errors import ERROR_RESPONSES
from app.api.portal import Body
from app.portal import inbox

router = APIRouter(prefix="/api/inbox", tags=["inbox"], responses=ERROR_RESPONSES)

Action = Literal["read", "unread", "seen", "archive", "unarchive"]
ItemId = Annotated[str, Field(min_length=1, max_length=inbox.MAX_ID_LENGTH,
                              description="an item id: the notification event's UUID")]


class CountsOut(BaseModel):
    unread: int = Field(description=f"unread items not archived; at most {inbox.CAP}")
    unseen: int = Field(description=f"unseen items not archived; at most {inbox.CAP}")
    countsCapped: bool = Field(description=f"a count is over {inbox.CAP} (then it says "
                                           f"{inbox.CAP})")


class ItemOut(BaseModel):
    id: str = Field(description="the notification event's id")
    stream: str
    offset: int
    type: str | None
    title: str | None
    message: str | None
    createdAt: str
    read: bool
    seen: bool
    archived: bool


class InboxOut(BaseModel):
    items: list[ItemOut]
    counts: CountsOut
    hasMore: bool


class MarkIn(Body):
    ids: Annotated[list[ItemId], Field(min_length=1, max_length=inbox.MAX_IDS)] | None = None
    all: Literal[True] | None = Field(default=None, description="every item (read, seen)")


class MarkOut(BaseModel):
    counts: CountsOut


@router.get("", response_model=InboxOut)
def list_inbox(
    who: Caller, db: DB,
    state: Literal["unread", "all", "archived"] = "all",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[str | None, Query(min_length=1, max_length=inbox.MAX_ID_LENGTH,
                                        description="an item id: older items only")] = None,
) -> InboxOut:
    """Notifications of the caller's user and role streams, newest first (`all` and
    `unread` leave archived items out), with the counts."""
    items, more, counts = inbox.view(db, who, state=state, limit=limit, before=before)
    return InboxOut(items=[ItemOut(**i) for i in items],
                    counts=CountsOut(**counts.to_dict()), hasMore=more)


def _mark(action: Action, body: MarkIn, who: Caller, db: DB, ctx: Context) -> MarkOut:
    change = inbox.parse_change(action, body.ids, body.all)
    if ctx.limits is not None and who.user_id is not None:
        ctx.limits.check_sync("inbox", who.user_id)
    return MarkOut(counts=CountsOut(**inbox.mark(db, who, change).to_dict()))


def _route(action: Action) -> None:
    def mark(body: MarkIn, who: Caller, db: DB, ctx: Context) -> MarkOut:
        return _mark(action, body, who, db, ctx)
    mark.__name__ = f"mark_{action}"
    mark.__doc__ = (f"Mark items (`ids`) {action}"
                    + (" or every item (`all: true`)" if action in inbox.ALL_ACTIONS else "")
                    + "; writes `inbox-updated` on the caller's stream. Unknown or foreign "
                      "ids: 404, nothing changed.")
    router.add_api_route(f"/{action}", mark, methods=["POST"], response_model=MarkOut)


for _action in inbox.ACTIONS:
    _route(_action)  # type: ignore[arg-type]


__all__ = ["router"]
