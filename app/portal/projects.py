"""Domain changes of the portal, each writing its rows and its events in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Engine, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import iso_utc, utcnow
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.core.text import check_text
from app.outbox import writer
from app.outbox.ids import event_ids
from app.outbox.streams import project_stream, ticket_stream, user_stream
from app.outbox.writer import Nudger, append, append_rows, ensure_stream
from app.portal import access
from app.portal.auth import Principal
from app.portal.models import Message, Project, Ticket, User

MAX_MESSAGE = 10_000
MAX_CLIENT_ID = 100


def create_user(session: Session, *, email: str, role: str, name: str = "") -> User:
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user with email {email} exists", code="email_taken")
    user = User(email=email, role=role, name=name)
    session.add(user)
    session.flush()
    ensure_stream(session, user_stream(user.id))
    return user


def create_project(
    session: Session, *, name: str, client_id: int, technician_ids: list[int]
) -> Project:
    client = session.get(User, client_id)
    if client is None:
        raise NotFound(f"user {client_id} not found")
    if client.role != "client":
        raise InvalidInput(f"user {client_id} is not a client", code="invalid_client")
    project = Project(name=name, client_id=client_id,
                      technicians=_technicians(session, technician_ids))
    session.add(project)
    session.flush()
    ensure_stream(session, project_stream(project.id))
    return project


def _technicians(session: Session, technician_ids: list[int]) -> list[User]:
    technicians = []
    for tid in dict.fromkeys(technician_ids):
        tech = session.get(User, tid)
        if tech is None:
            raise NotFound(f"user {tid} not found")
        if tech.role != "technician":
            raise InvalidInput(f"user {tid} is not a technician", code="invalid_technician")
        technicians.append(tech)
    return technicians


def create_ticket(session: Session, *, project_id: int, subject: str, priority: str) -> Ticket:
    access.get_project(session, project_id)
    ticket = Ticket(project_id=project_id, subject=subject, priority=priority)
    session.add(ticket)
    session.flush()
    ensure_stream(session, ticket_stream(ticket.id))
    return ticket


def update_project(
    session: Session, who: Principal, project_id: int, *, progress: int | None,
    status: str | None, technician_ids: list[int] | None = None,
) -> tuple[Project, list[int]]:
    """Change a project; `project-updated` to its stream and a notification to its client.

    `technician_ids` (admins only) replaces the project's technicians; the ids taken off
    are returned, for their sockets to leave the project's rooms. Nothing to change
    writes nothing.
    """
    project = access.require_project_editor(session, who, project_id)
    if progress is None and status is None and technician_ids is None:
        return project, []
    removed: list[int] = []
    payload: dict[str, Any] = {}
    if technician_ids is not None:
        access.require_admin(who)
        before = set(project.technician_ids)
        project.technicians = _technicians(session, technician_ids)
        removed = sorted(before - set(technician_ids))
        payload["technicianIds"] = project.technician_ids
    if progress is not None:
        project.progress = progress
    if status is not None:
        project.status = status
    session.flush()
    append(session, project_stream(project.id), "project-updated",
           {"projectId": project.id, "progress": project.progress, "status": project.status,
            **payload})
    if progress is not None or status is not None:
        append(session, user_stream(project.client_id), "notification",
               {"type": "info", "title": "Project updated",
                "message": f"{project.name}: {project.progress}% ({project.status})"})
    return project, removed


@dataclass(frozen=True, slots=True)
class ProjectView:
    id: int
    name: str
    client_id: int
    technician_ids: list[int]
    progress: int
    status: str


# The caller's checks, the project's new state and its technicians in one round trip
# (PostgreSQL): no row if the project, the caller's row or the caller's right is missing.
_SET_PROGRESS = """\
UPDATE projects SET progress = coalesce(%(progress)s, progress),
                    status = coalesce(%(status)s, status)
WHERE id = %(id)s
  AND EXISTS (SELECT 1 FROM users WHERE id = %(uid)s AND role = %(role)s)
  AND (%(admin)s OR EXISTS (SELECT 1 FROM project_technicians
                            WHERE project_id = %(id)s AND user_id = %(uid)s))
RETURNING name, client_id, progress, status,
  ARRAY(SELECT user_id FROM project_technicians
        WHERE project_id = projects.id ORDER BY user_id)"""


def set_progress(session: Session, who: Principal, project_id: int, *, progress: int | None,
                 status: str | None, nudge: Nudger | None = None) -> ProjectView:
    """`access.check_user_row` and `update_project` without technicians, on PostgreSQL:
    one `UPDATE ... RETURNING` that also checks the caller (the token's user exists with
    its role; a technician is on the project) and reads the technicians, then the two
    events (one statement per stream).

    Only when that UPDATE changes nothing are the checks made one by one, to refuse
    with the same error, in the same order, as `check_user_row` then `update_project`."""
    if progress is None and status is None:
        raise ValueError("nothing to change: use update_project")
    uid = who.user_id
    row = None
    if uid is not None and who.role in ("admin", "technician"):
        row = session.connection().exec_driver_sql(_SET_PROGRESS, {
            "id": project_id, "progress": progress, "status": status, "uid": uid,
            "role": who.role, "admin": who.is_admin}).first()
    if row is None:  # why not: the caller's row, its right, the project
        access.check_user_row(session, who)
        access.require_project_editor(session, who, project_id)
        raise NotFound(f"project {project_id} not found")  # pragma: no cover  (a race)
    name, client_id, new_progress, new_status, technicians = row
    view = ProjectView(project_id, name, client_id, list(technicians or []), new_progress,
                       new_status)
    append_rows(session, _progress_events(project_id, client_id, name, new_progress,
                                          new_status), nudge=nudge)
    return view


class _TakeTheTransaction(Exception):
    """The pipelined PATCH cannot answer: roll back, and let `set_progress` answer."""


def set_progress_pipelined(engine: Engine, who: Principal, project_id: int, *,
                           progress: int | None, status: str | None
                           ) -> tuple[ProjectView, set[str]] | None:
    """`set_progress` in one psycopg pipeline on PostgreSQL: `BEGIN` and the checked
    `UPDATE` in one round trip, the two events (one statement per stream, in name order:
    project-N before user-M, as `append_rows` locks them) in the next, then `COMMIT`: three
    round trips instead of five. Answers (the project, the streams to nudge), or None
    with nothing written when the caller may not (or the project or a stream is missing):
    then `set_progress` in a transaction answers, or refuses, as before."""
    uid = who.user_id
    if (uid is None or who.role not in ("admin", "technician")
            or engine.dialect.name != "postgresql" or (progress is None and status is None)):
        return None
    with engine.connect() as conn:
        raw: Any = conn.connection.driver_connection
        try:
            with raw.pipeline(), raw.transaction():
                row = raw.execute(_SET_PROGRESS, {
                    "id": project_id, "progress": progress, "status": status, "uid": uid,
                    "role": who.role, "admin": who.is_admin}).fetchone()
                if row is None:
                    raise _TakeTheTransaction
                name, client_id, new_progress, new_status, technicians = row
                events = _progress_events(project_id, client_id, name, new_progress, new_status)
                now = utcnow()
                ids = event_ids(len(events))
                cursors = [raw.execute(writer.APPEND_SQL, writer.append_params(
                    event[0], [event], [0], [id_], [writer.encode_data(event[2])], now))
                    for id_, event in zip(ids, events, strict=True)]
                heads = [cursor.fetchone() for cursor in cursors]
                if any(head is None for head in heads):
                    raise _TakeTheTransaction
        except _TakeTheTransaction:
            return None
        except psycopg.Error as exc:  # as SQLAlchemy would have raised it (503 if down)
            gone = engine.dialect.is_disconnect(exc, raw, None)  # type: ignore[arg-type]
            if gone:
                conn.invalidate(exc)
            raise sa_exc.DBAPIError.instance(None, None, exc, psycopg.Error,
                                             connection_invalidated=gone) from exc
    view = ProjectView(project_id, name, client_id, list(technicians or []), new_progress,
                       new_status)
    return view, {event[0] for event in events}


def _progress_events(project_id: int, client_id: int, name: str, progress: int,
                     status: str) -> list[writer.Row]:
    """`project-updated` to the project's stream, and the notification to its client."""
    return [
        (project_stream(project_id), "project-updated",
         {"projectId": project_id, "progress": progress, "status": status}),
        (user_stream(client_id), "notification",
         {"type": "info", "title": "Project updated",
          "message": f"{name}: {progress}% ({status})"}),
    ]


def project_rooms(session: Session, project_id: int) -> list[str]:
    """The project's stream and its tickets' streams: what a member's sockets may be in."""
    tickets = session.scalars(select(Ticket.id).where(Ticket.project_id == project_id))
    return [project_stream(project_id), *(ticket_stream(t) for t in tickets)]


def update_ticket(
    session: Session, who: Principal, ticket_id: int, *, status: str | None,
    priority: str | None,
) -> Ticket:
    ticket = access.require_ticket_editor(session, who, ticket_id)
    if status is not None:
        ticket.status = status
    if priority is not None:
        ticket.priority = priority
    session.flush()
    append(session, ticket_stream(ticket.id), "ticket-updated",
           {"ticketId": ticket.id, "status": ticket.status, "priority": ticket.priority})
    return ticket


def message_payload(message: Message, author: User) -> dict[str, Any]:
    return {"ticketId": message.ticket_id, "messageId": message.id, "message": message.body,
            "author": {"id": author.id, "email": author.email,
                       "name": author.name or author.email},
            "createdAt": iso_utc(message.created_at)}


def _existing_message(session: Session, author_id: int, client_message_id: str) -> Message | None:
    return session.scalar(select(Message).where(
        Message.author_id == author_id, Message.client_message_id == client_message_id))


def post_message(
    factory: sessionmaker[Session], who: Principal, ticket_id: int, body: str,
    client_message_id: str | None = None,
) -> tuple[int, bool]:
    """Store a chat message and its `new-message` event in one transaction.

    Returns (message id, created). A repeated `client_message_id` from the same user
    stores nothing and returns the first message, also when two requests race.
    """
    check_text(body, "message", min_len=1, max_len=MAX_MESSAGE, code="invalid_message")
    if client_message_id is not None:
        check_text(client_message_id, "clientMessageId", min_len=1, max_len=MAX_CLIENT_ID,
                   code="invalid_client_message_id")
    uid = who.user_id
    if uid is None:
        raise Forbidden("only users chat")
    for _attempt in range(2):
        try:
            with factory() as session, session.begin():
                access.require_ticket_reader(session, who, ticket_id)
                if client_message_id is not None:
                    first = _existing_message(session, uid, client_message_id)
                    if first is not None:
                        if first.ticket_id != ticket_id:
                            raise Conflict("clientMessageId was used for another ticket",
                                           code="duplicate_client_message_id")
                        return first.id, False
                author = session.get(User, uid)
                if author is None:
                    raise Forbidden(f"user {uid} does not exist")
                message = Message(ticket_id=ticket_id, author_id=uid, body=body,
                                  client_message_id=client_message_id)
                session.add(message)
                session.flush()
                append(session, ticket_stream(ticket_id), "new-message",
                       message_payload(message, author))
                return message.id, True
        except IntegrityError:
            if client_message_id is None:
                raise
            continue  # a concurrent request stored it first: answer with that one
    raise Conflict("could not store the message", code="conflict")
