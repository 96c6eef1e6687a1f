"""What a portal shows on load: the caller's projects, a project's tickets, a ticket's chat.

Live changes then arrive as events; these reads are the state an app starts from (and
reloads after `onReset`). The same access rules as the streams: admins see everything, a
project's client and technicians see that project and its tickets.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from sqlalchemy import Select, select

from app.api.deps import DB, Caller
from app.api.errors import ERROR_RESPONSES
from app.api.portal import ProjectOut, TicketOut, _project_out
from app.core.errors import Forbidden
from app.portal import access, projects
from app.portal.auth import Principal
from app.portal.models import Message, Project, Ticket, User, project_technicians

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

MAX_PROJECTS = 200
# Ids are the database's 32-bit integers: a larger one is refused (422) before any query
# (PostgreSQL would refuse the cast: a 500).
PathId = Annotated[int, Path(gt=0, lt=2**31)]


class Projects(BaseModel):
    projects: list[ProjectOut]


class Tickets(BaseModel):
    tickets: list[TicketOut]


class Author(BaseModel):
    id: int
    email: str
    name: str  # the user's name (their e-mail address when they have none)


class MessageView(BaseModel):
    """The `new-message` payload of a stored message."""

    ticketId: int
    messageId: int
    message: str
    author: Author
    createdAt: str


class Messages(BaseModel):
    messages: list[MessageView]


def _visible_projects(who: Principal) -> Select[Project]:
    query = select(Project).order_by(Project.id).limit(MAX_PROJECTS)
    if who.is_admin:
        return query
    uid = who.user_id
    if uid is None:
        raise Forbidden("services have no projects")
    if who.role == "technician":
        return query.join(project_technicians,
                          project_technicians.c.project_id == Project.id).where(
            project_technicians.c.user_id == uid)
    return query.where(Project.client_id == uid)


@router.get("/projects", response_model=Projects, tags=["projects"])
def list_projects(who: Caller, db: DB) -> Projects:
    """The projects the caller may read (the first 200 by id)."""
    return Projects(projects=[_project_out(p) for p in db.scalars(_visible_projects(who))])


@router.get("/projects/{project_id}/tickets", response_model=Tickets, tags=["tickets"])
def list_tickets(project_id: PathId, who: Caller, db: DB,
                 limit: Annotated[int, Query(ge=1, le=500)] = 200) -> Tickets:
    """The last `limit` tickets of a readable project, oldest first."""
    access.require_project_reader(db, who, project_id)
    tickets = db.scalars(select(Ticket).where(Ticket.project_id == project_id)
                         .order_by(Ticket.id.desc()).limit(limit)).all()
    return Tickets(tickets=[TicketOut(id=t.id, projectId=t.project_id, subject=t.subject,
                                      status=t.status, priority=t.priority)
                            for t in reversed(tickets)])


@router.get("/tickets/{ticket_id}/messages", response_model=Messages, tags=["tickets"])
def list_messages(ticket_id: PathId, who: Caller, db: DB,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Messages:
    """The last `limit` chat messages of a readable ticket, oldest first."""
    access.require_ticket_reader(db, who, ticket_id)
    rows = db.execute(select(Message, User).join(User, User.id == Message.author_id)
                      .where(Message.ticket_id == ticket_id)
                      .order_by(Message.id.desc()).limit(limit)).all()
    return Messages(messages=[MessageView.model_validate(projects.message_payload(m, u))
                              for m, u in reversed(rows)])


__all__ = ["router"]
