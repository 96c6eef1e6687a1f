"""Project documents: adding one writes `document-added` to the project's stream."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from app.core.errors import InvalidInput
from app.outbox.streams import project_stream
from app.outbox.writer import append
from app.portal import access
from app.portal.auth import Principal
from app.portal.models import Document

MAX_NAME = 300
MAX_URL = 2000


def document_dict(document: Document) -> dict[str, Any]:
    return {"id": document.id, "name": document.name, "url": document.url}


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc or len(url) > MAX_URL:
        raise InvalidInput("url must be an http(s) URL", code="invalid_url")
    return url


def add_document(
    session: Session, who: Principal, project_id: int, *, name: str, url: str,
) -> Document:
    """Attach a document to a project (its technicians, admins)."""
    project = access.require_project_editor(session, who, project_id)
    if not 1 <= len(name) <= MAX_NAME:
        raise InvalidInput(f"name must be 1 to {MAX_NAME} characters", code="invalid_name")
    document = Document(project_id=project.id, name=name, url=check_url(url))
    session.add(document)
    session.flush()
    append(session, project_stream(project.id), "document-added",
           {"projectId": project.id, "document": document_dict(document)})
    return document
