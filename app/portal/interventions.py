"""Interventions on a project: creating or changing one writes `intervention-updated`."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.outbox.streams import project_stream
from app.outbox.writer import append
from app.portal import access
from app.portal.auth import Principal
from app.portal.models import Intervention

DETAIL_FIELDS = ("title", "scheduledAt", "notes")


def intervention_dict(intervention: Intervention) -> dict[str, Any]:
    """`{id, status, title?, scheduledAt?, notes?}` as clients see it."""
    details = {k: v for k, v in (intervention.details or {}).items() if k in DETAIL_FIELDS}
    return {"id": intervention.id, "projectId": intervention.project_id,
            "status": intervention.status, **details}


def _event(session: Session, intervention: Intervention) -> None:
    append(session, project_stream(intervention.project_id), "intervention-updated",
           {"projectId": intervention.project_id,
            "intervention": intervention_dict(intervention)})


def create_intervention(
    session: Session, who: Principal, project_id: int, *, status: str = "planned",
    details: dict[str, Any] | None = None,
) -> Intervention:
    """Plan an intervention on a project (its technicians, admins)."""
    access.require_project_editor(session, who, project_id)
    clean = {k: v for k, v in (details or {}).items() if k in DETAIL_FIELDS and v is not None}
    intervention = Intervention(project_id=project_id, status=status, details=clean)
    session.add(intervention)
    session.flush()
    _event(session, intervention)
    return intervention


def update_intervention(
    session: Session, who: Principal, intervention_id: int, *, status: str | None = None,
    details: dict[str, Any] | None = None,
) -> Intervention:
    """Change an intervention's status or details; fields left out keep their value."""
    intervention = session.get(Intervention, intervention_id)
    if intervention is None:
        raise NotFound(f"intervention {intervention_id} not found")
    access.require_project_editor(session, who, intervention.project_id)
    if status is not None:
        intervention.status = status
    if details:
        merged = dict(intervention.details or {})
        merged.update({k: v for k, v in details.items() if k in DETAIL_FIELDS})
        intervention.details = {k: v for k, v in merged.items() if v is not None}
    session.flush()
    _event(session, intervention)
    return intervention
