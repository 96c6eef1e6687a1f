"""Quotes for a client: creating or changing one writes `quote-updated` to `user-{clientId}`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from app.core.errors import InvalidInput, NotFound
from app.outbox.streams import user_stream
from app.outbox.writer import append
from app.portal import access
from app.portal.auth import Principal
from app.portal.models import Quote, User


def quote_dict(quote: Quote) -> dict[str, Any]:
    return {"id": quote.id, "clientId": quote.client_id, "projectId": quote.project_id,
            "amount": f"{Decimal(quote.amount):.2f}", "status": quote.status}


def _event(session: Session, quote: Quote) -> None:
    append(session, user_stream(quote.client_id), "quote-updated",
           {"quoteId": quote.id, "status": quote.status})


def create_quote(
    session: Session, who: Principal, *, client_id: int, amount: Decimal,
    project_id: int | None = None, status: str = "draft",
) -> Quote:
    """A quote for a client, optionally for one of its projects (admins)."""
    access.require_admin(who)
    client = session.get(User, client_id)
    if client is None:
        raise NotFound(f"user {client_id} not found")
    if client.role != "client":
        raise InvalidInput(f"user {client_id} is not a client", code="invalid_client")
    if project_id is not None:
        project = access.get_project(session, project_id)
        if project.client_id != client_id:
            raise InvalidInput(f"project {project_id} is not client {client_id}'s",
                               code="invalid_project")
    quote = Quote(client_id=client_id, project_id=project_id, amount=amount, status=status)
    session.add(quote)
    session.flush()
    _event(session, quote)
    return quote


def update_quote(
    session: Session, who: Principal, quote_id: int, *, status: str | None = None,
    amount: Decimal | None = None,
) -> Quote:
    """Change a quote's status or amount (admins)."""
    access.require_admin(who)
    quote = session.get(Quote, quote_id)
    if quote is None:
        raise NotFound(f"quote {quote_id} not found")
    if status is not None:
        quote.status = status
    if amount is not None:
        quote.amount = amount  # type: ignore[assignment]
    session.flush()
    _event(session, quote)
    return quote
