"""Demo data for `herald seed` and `make dev`: an admin, a technician, two clients, projects."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.portal import projects
from app.portal.models import Project, User

DEMO = [
    ("admin@herald.test", "admin", "Ada Admin"),
    ("tech@herald.test", "technician", "Tom Tech"),
    ("client@herald.test", "client", "Cleo Client"),
    ("other@herald.test", "client", "Oscar Other"),
]


def seed(factory: sessionmaker[Session]) -> dict[str, Any]:
    """Create the demo data once; running it again changes nothing. Returns the ids."""
    with factory() as session, session.begin():
        ids: dict[str, int] = {}
        for email, role, name in DEMO:
            existing = session.scalar(select(User).where(User.email == email))
            user = existing or projects.create_user(session, email=email, role=role, name=name)
            ids[role if role != "client" or "client" not in ids else "other_client"] = user.id
        project = session.scalar(select(Project).where(Project.name == "Demo renovation"))
        if project is None:
            project = projects.create_project(session, name="Demo renovation",
                                            client_id=ids["client"],
                                            technician_ids=[ids["technician"]])
            ticket = projects.create_ticket(session, project_id=project.id,
                                          subject="Leaking tap in the kitchen", priority="high")
            ticket_id: int | None = ticket.id
        else:
            from app.portal.models import Ticket

            ticket_id = session.scalar(select(Ticket.id).where(Ticket.project_id == project.id))
        return {"admin": ids["admin"], "technician": ids["technician"],
                "client": ids["client"], "other_client": ids["other_client"],
                "project": project.id, "ticket": ticket_id}
