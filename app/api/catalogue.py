"""Documents, interventions and quotes over HTTP; each change writes its event."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import DB, Caller
from app.api.errors import ERROR_RESPONSES
from app.api.portal import Body, PathId
from app.core.ids import MAX_ID
from app.core.text import Storable
from app.portal import access, documents, interventions, quotes

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

Id = Annotated[int, Field(gt=0, le=MAX_ID)]
InterventionStatus = Literal["planned", "scheduled", "in-progress", "done", "cancelled"]
QuoteStatus = Literal["draft", "sent", "accepted", "rejected", "expired"]
Amount = Annotated[Decimal, Field(ge=0, lt=10**10, decimal_places=2,
                                  description="A number or decimal string, 2 decimals at most")]
Short = Annotated[str, Field(min_length=1, max_length=200), Storable]
Notes = Annotated[str, Field(max_length=2000), Storable]


class DocumentIn(Body):
    name: Annotated[str, Field(min_length=1, max_length=documents.MAX_NAME), Storable]
    url: Annotated[str, Field(min_length=1, max_length=documents.MAX_URL,
                              description="http(s) URL where the file is served"), Storable]


class DocumentOut(BaseModel):
    id: int
    projectId: int
    name: str
    url: str


class InterventionFields(Body):
    title: Short | None = None
    scheduledAt: Annotated[str, Field(max_length=40, description="ISO 8601 date-time"),
                           Storable] | None = None
    notes: Notes | None = None

    def details(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items()
                if k in interventions.DETAIL_FIELDS and v is not None}


class InterventionIn(InterventionFields):
    projectId: Id
    status: InterventionStatus = "planned"


class InterventionPatch(InterventionFields):
    status: InterventionStatus | None = None


class InterventionOut(BaseModel):
    id: int
    projectId: int
    status: str
    title: str | None = None
    scheduledAt: str | None = None
    notes: str | None = None


class QuoteIn(Body):
    clientId: Id
    projectId: Id | None = None
    amount: Amount
    status: QuoteStatus = "draft"


class QuotePatch(Body):
    status: QuoteStatus | None = None
    amount: Amount | None = None


class QuoteOut(BaseModel):
    id: int
    clientId: int
    projectId: int | None
    amount: str = Field(description="Decimal string, e.g. '1200.00'")
    status: str


@router.post("/projects/{project_id}/documents", status_code=201, response_model=DocumentOut,
             tags=["documents"])
def add_document(project_id: PathId, body: DocumentIn, who: Caller, db: DB) -> DocumentOut:
    """Attach a document (admins, the project's technicians); writes `document-added`."""
    doc = documents.add_document(db, who, project_id, name=body.name, url=body.url)
    return DocumentOut(id=doc.id, projectId=doc.project_id, name=doc.name, url=doc.url)


@router.post("/interventions", status_code=201, response_model=InterventionOut,
             tags=["interventions"])
def create_intervention(body: InterventionIn, who: Caller, db: DB) -> InterventionOut:
    """Plan an intervention (admins, the project's technicians); writes `intervention-updated`."""
    item = interventions.create_intervention(db, who, body.projectId, status=body.status,
                                             details=body.details())
    return InterventionOut(**interventions.intervention_dict(item))


@router.patch("/interventions/{intervention_id}", response_model=InterventionOut,
              tags=["interventions"])
def patch_intervention(intervention_id: PathId, body: InterventionPatch, who: Caller,
                       db: DB) -> InterventionOut:
    """Change an intervention (admins, the project's technicians); writes `intervention-updated`."""
    item = interventions.update_intervention(db, who, intervention_id, status=body.status,
                                             details=body.details())
    return InterventionOut(**interventions.intervention_dict(item))


@router.post("/quotes", status_code=201, response_model=QuoteOut, tags=["quotes"])
def create_quote(body: QuoteIn, who: Caller, db: DB) -> QuoteOut:
    """Create a quote for a client (admins); writes `quote-updated` to `user-{clientId}`."""
    quote = quotes.create_quote(db, who, client_id=body.clientId, amount=body.amount,
                                project_id=body.projectId, status=body.status)
    return QuoteOut(**quotes.quote_dict(quote))


@router.get("/quotes/{quote_id}", response_model=QuoteOut, tags=["quotes"])
def get_quote(quote_id: PathId, who: Caller, db: DB) -> QuoteOut:
    """A quote: its client and admins read it."""
    return QuoteOut(**quotes.quote_dict(access.require_quote_reader(db, who, quote_id)))


@router.patch("/quotes/{quote_id}", response_model=QuoteOut, tags=["quotes"])
def patch_quote(quote_id: PathId, body: QuotePatch, who: Caller, db: DB) -> QuoteOut:
    """Change a quote's status or amount (admins); writes `quote-updated`."""
    quote = quotes.update_quote(db, who, quote_id, status=body.status, amount=body.amount)
    return QuoteOut(**quotes.quote_dict(quote))


__all__ = ["router"]
