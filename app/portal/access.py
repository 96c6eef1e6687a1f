"""Who may read which stream and change which thing (docs/protocol.md, "Tokens").

What a caller may not read does not exist for them: a project, ticket, quote or stream
they cannot see answers `NotFound`, exactly as an unknown id does, so that a token cannot
tell which ids exist (GitHub answers 404 for private repositories the same way).
`Forbidden` is kept for what the caller can see but may not do (a client changing their
own project) and for routes that are for admins only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, exists, select
from sqlalchemy.orm import Session

from app.core.errors import AuthError, Forbidden, NotFound
from app.outbox.streams import ROLE_STREAMS, parse_stream
from app.portal.auth import Principal
from app.portal.models import Project, Quote, Ticket, User, project_technicians


def check_user_row(session: Session, who: Principal) -> str:
    """The user's name, if the token's user still exists with the token's role.

    A token outlives changes to its user: a deleted user, or one whose role changed, is
    refused (token_invalid) until a new token is minted. Services have no row.
    """
    if who.role == "service":
        return who.sub
    uid = who.user_id
    # Core on the session's connection, built once: one row of three columns, no ORM
    # object to build, no statement to compile.
    user = session.connection().execute(_USER_ROW, {"uid": uid}).first(
    ) if uid is not None else None
    return check_user(who, user)


def check_user(who: Principal, user: Any) -> str:
    """`check_user_row` on a row read already (role, name, email; None: no such user)."""
    if user is None:
        raise AuthError("the token's user does not exist", code="token_invalid")
    if user.role != who.role:
        raise AuthError("the token's role is no longer the user's", code="token_invalid")
    return str(user.name or user.email)


_USER_ROW = select(User.role, User.name, User.email).where(User.id == bindparam("uid"))
# The same columns for many users at once (a wave of connects, app/gateway/connects.py).
USER_ROWS = select(User.id, User.role, User.name, User.email).where(
    User.id.in_(bindparam("uids", expanding=True)))
_ON_PROJECT = select(exists().where(project_technicians.c.project_id == bindparam("project"),
                                    project_technicians.c.user_id == bindparam("uid")))


def is_technician_on(session: Session, project_id: int, user_id: int) -> bool:
    return bool(session.connection().execute(
        _ON_PROJECT, {"project": project_id, "uid": user_id}).scalar())


def project_role(session: Session, who: Principal, project: Project) -> str | None:
    """'admin', 'technician' or 'client' for a member of the project, else None."""
    return _role_on(session, who, project.id, project.client_id)


def _role_on(session: Session, who: Principal, project_id: int, client_id: int) -> str | None:
    uid = who.user_id
    on_project = (who.role == "technician" and uid is not None
                  and is_technician_on(session, project_id, uid))
    return _role_of(who, client_id, on_project)


def _role_of(who: Principal, client_id: int, on_project: bool) -> str | None:
    """The decision on the project's client and whether `who` is assigned to it."""
    if who.is_admin:
        return "admin"
    uid = who.user_id
    if uid is None:
        return None
    if who.role == "technician" and on_project:
        return "technician"
    if who.role == "client" and client_id == uid:
        return "client"
    return None


def get_project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} not found")
    return project


def get_ticket(session: Session, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"ticket {ticket_id} not found")
    return ticket


def require_project_reader(session: Session, who: Principal, project_id: int) -> None:
    """NotFound unless the project exists and `who` may read it: one indexed statement.

    The project's row (its client) and the caller's own assignment (the primary key of
    project_technicians), never the project's technicians: loading the Project would
    read every technician on it (its `technicians` relationship is selectin)."""
    if not _may_read(session, who, _READER_OF_PROJECT, project_id):
        raise NotFound(f"project {project_id} not found")  # hidden: see the module


def _may_read(session: Session, who: Principal, query: Select[int, bool], entity_id: int) -> bool:
    row = session.connection().execute(query, {"id": entity_id, "uid": who.user_id}).first()
    return row is not None and _role_of(who, row.client_id, bool(row.on_project)) is not None


def require_project_editor(session: Session, who: Principal, project_id: int) -> Project:
    project = get_project(session, project_id)
    role = project_role(session, who, project)
    if role is None:
        raise NotFound(f"project {project_id} not found")
    if role not in {"admin", "technician"}:
        raise Forbidden(f"not allowed to change project {project_id}")
    return project


def require_ticket_reader(session: Session, who: Principal, ticket_id: int) -> None:
    """NotFound unless the ticket exists and `who` may read its project (one statement,
    as `require_project_reader`)."""
    if not _may_read(session, who, _READER_OF_TICKET, ticket_id):
        raise NotFound(f"ticket {ticket_id} not found")


def require_ticket_editor(session: Session, who: Principal, ticket_id: int) -> Ticket:
    ticket = get_ticket(session, ticket_id)
    project = get_project(session, ticket.project_id)
    role = project_role(session, who, project)
    if role is None:
        raise NotFound(f"ticket {ticket_id} not found")
    if role not in {"admin", "technician"}:
        raise Forbidden(f"not allowed to change ticket {ticket_id}")
    return ticket


def require_quote_reader(session: Session, who: Principal, quote_id: int) -> Quote:
    quote = session.get(Quote, quote_id)
    if quote is None:
        raise NotFound(f"quote {quote_id} not found")
    if not (who.is_admin or (who.role == "client" and who.user_id == quote.client_id)):
        raise NotFound(f"quote {quote_id} not found")
    return quote


def require_admin(who: Principal) -> None:
    if not who.is_admin:
        raise Forbidden("admins only")


def may_read_stream(session: Session, who: Principal, stream: str) -> bool:
    """True if `who` may read `stream`; raises InvalidInput for a name of no known form."""
    parsed = parse_stream(stream)
    if who.is_admin:
        return True
    if who.role == "service":
        return False
    if parsed.kind == "role":
        return ROLE_STREAMS.get(who.role) == stream
    if parsed.kind == "user":
        return who.user_id == parsed.id
    assert parsed.id is not None
    query = _READER_OF_PROJECT if parsed.kind == "project" else _READER_OF_TICKET
    return _may_read(session, who, query, parsed.id)


# The project's client and the caller's own assignment as one Core row, by primary keys:
# loading the Project would load every technician on it (its `technicians` relationship is
# selectin), which made each join of a project of 1,000 technicians read 1,000 users.
_ASSIGNED = exists().where(project_technicians.c.project_id == Project.id,
                           project_technicians.c.user_id == bindparam("uid")
                           ).label("on_project")
_READER_OF_PROJECT = select(Project.client_id, _ASSIGNED).where(Project.id == bindparam("id"))
_READER_OF_TICKET = (select(Project.client_id, _ASSIGNED)
                     .join(Ticket, Ticket.project_id == Project.id)
                     .where(Ticket.id == bindparam("id")))


def require_stream_reader(session: Session, who: Principal, stream: str) -> None:
    if not may_read_stream(session, who, stream):
        if parse_stream(stream).kind == "role":  # the role streams are public names
            raise Forbidden(f"not allowed to read stream {stream}")
        raise NotFound(f"stream {stream} not found")
