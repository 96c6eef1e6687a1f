"""Who may read a project or a ticket (join-project, join-ticket, their reads over HTTP): the
decision per role, made by one indexed statement whatever the number of technicians on the
project."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from sqlalchemy import event

from app.core.errors import NotFound
from app.portal import access, projects
from app.portal.auth import Principal
from testkit.databases import Database


@dataclass
class Project:
    id: int
    ticket: int
    ids: dict[str, int] = field(default_factory=dict)

    def who(self, role: str) -> Principal:
        real = role.removeprefix("other-")
        if role == "service":
            return Principal(sub="billing", email="", role="service")
        return Principal(sub=str(self.ids[role]), email=f"{role}@t.test", role=real)


def make_project(db: Database, technicians: int) -> Project:
    """A project with its client and `technicians` technicians (the first one is
    'technician'), plus an admin, another client and a technician on no project."""
    with db.factory() as session, session.begin():
        def user(name: str, role: str) -> int:
            return projects.create_user(session, email=f"{name}-{technicians}@t.test",
                                        role=role).id
        ids = {"admin": user("admin", "admin"), "client": user("client", "client"),
               "other-client": user("other-client", "client"),
               "other-technician": user("other-technician", "technician")}
        crew = [user(f"tech{i}", "technician") for i in range(technicians)]
        ids["technician"] = crew[0]
        made = projects.create_project(session, name="Loft", client_id=ids["client"],
                                       technician_ids=crew)
        ticket = projects.create_ticket(session, project_id=made.id, subject="Leak",
                                        priority="normal")
        return Project(made.id, ticket.id, ids)


READERS = {"admin", "client", "technician"}
ROLES = sorted(READERS | {"other-client", "other-technician", "service"})


@pytest.mark.parametrize("role", ROLES)
def test_project_reader_is_its_admin_client_or_assigned_technician(pg_db: Database,
                                                                   role: str) -> None:
    project = make_project(pg_db, technicians=2)
    with pg_db.factory() as session:
        if role in READERS:
            access.require_project_reader(session, project.who(role), project.id)
        else:
            with pytest.raises(NotFound):
                access.require_project_reader(session, project.who(role), project.id)


def test_an_unknown_project_is_not_found_even_for_an_admin(pg_db: Database) -> None:
    project = make_project(pg_db, technicians=1)
    with pg_db.factory() as session, pytest.raises(NotFound):
        access.require_project_reader(session, project.who("admin"), project.id + 1000)


@contextmanager
def counted(db: Database) -> Iterator[list[int]]:
    """The rows each statement run on `db`'s engine returned, one entry per statement."""
    rows: list[int] = []

    def seen(_conn: object, cursor: object, *_: object) -> None:
        rows.append(getattr(cursor, "rowcount", -1))

    event.listen(db.engine, "after_cursor_execute", seen)
    try:
        yield rows
    finally:
        event.remove(db.engine, "after_cursor_execute", seen)


@pytest.mark.parametrize("role", sorted(READERS))
def test_deciding_a_project_or_ticket_reader_reads_one_row_whatever_the_technicians(
        pg_db: Database, role: str) -> None:
    small, large = make_project(pg_db, technicians=1), make_project(pg_db, technicians=60)
    for project in (small, large):
        with pg_db.factory() as session, counted(pg_db) as rows:
            access.require_project_reader(session, project.who(role), project.id)
        assert rows == [1], (project.id, rows)
        with pg_db.factory() as session, counted(pg_db) as rows:
            access.require_ticket_reader(session, project.who(role), project.ticket)
        assert rows == [1], (project.ticket, rows)
