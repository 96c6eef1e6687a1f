"""Tickets over HTTP: change status/priority, post a chat message (same rules as the socket)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from app.api.deps import DB, Caller, Context
from app.api.errors import ERROR_RESPONSES
from app.api.portal import Body, PathId, TicketOut
from app.core.text import NotBlank
from app.portal import projects

router = APIRouter(prefix="/api", tags=["tickets"], responses=ERROR_RESPONSES)

TicketStatus = Literal["open", "in-progress", "waiting", "resolved", "closed"]
Priority = Literal["low", "normal", "high", "urgent"]


class TicketPatch(Body):
    status: TicketStatus | None = None
    priority: Priority | None = None


class MessageIn(Body):
    message: Annotated[str, Field(min_length=1, max_length=projects.MAX_MESSAGE), NotBlank]
    clientMessageId: Annotated[
        str | None,
        Field(min_length=1, max_length=projects.MAX_CLIENT_ID,
              description="Retry key: the same value from the same user stores one message"),
    ] = None


class MessageOut(BaseModel):
    id: int
    ticketId: int
    duplicate: bool = Field(description="True when clientMessageId named an earlier message")


@router.patch("/tickets/{ticket_id}", response_model=TicketOut)
def patch_ticket(ticket_id: PathId, body: TicketPatch, who: Caller, db: DB) -> TicketOut:
    """Change status/priority (admins, the project's technicians); writes `ticket-updated`."""
    t = projects.update_ticket(db, who, ticket_id, status=body.status, priority=body.priority)
    return TicketOut(id=t.id, projectId=t.project_id, subject=t.subject, status=t.status,
                     priority=t.priority)


@router.post("/tickets/{ticket_id}/messages", status_code=201, response_model=MessageOut,
             responses={200: {"model": MessageOut,
                              "description": "A repeated clientMessageId: the first message"},
                        409: {"description": "clientMessageId was used for another ticket"}})
def post_message(ticket_id: PathId, body: MessageIn, who: Caller, ctx: Context,
                 response: Response) -> MessageOut:
    """Post a chat message (the ticket's participants); writes `new-message`."""
    if ctx.limits is not None and who.user_id is not None:
        ctx.limits.check_sync("message", who.user_id)
    message_id, created = projects.post_message(ctx.factory, who, ticket_id, body.message,
                                              body.clientMessageId)
    if not created:
        response.status_code = 200
    return MessageOut(id=message_id, ticketId=ticket_id, duplicate=not created)


__all__ = ["router"]
