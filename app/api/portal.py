"""Admin creation of users, projects and tickets; domain changes that write events."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import DB, AppContext, Caller, Context, TokenCaller, write_then_nudge
from app.api.errors import ERROR_RESPONSES
from app.core.ids import MAX_ID
from app.core.text import NotBlank, Storable
from app.portal import access, projects
from app.portal.auth import Principal
from app.portal.models import Project

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)

Name = Annotated[str, Field(min_length=1, max_length=200), Storable]
PathId = Annotated[int, Path(gt=0, le=MAX_ID)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserIn(Body):
    email: Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"),
                     Storable]
    role: Literal["client", "technician", "admin"]
    name: Annotated[str, Field(max_length=200), Storable] = ""


class UserOut(BaseModel):
    id: int
    email: str
    role: str
    name: str


class ProjectIn(Body):
    name: Name
    clientId: Annotated[int, Field(gt=0, le=MAX_ID)]
    technicianIds: Annotated[list[Annotated[int, Field(gt=0, le=MAX_ID)]],
                             Field(max_length=100)] = []


class ProjectOut(BaseModel):
    id: int
    name: str
    clientId: int
    technicianIds: list[int]
    progress: int
    status: str


class ProjectPatch(Body):
    progress: Annotated[int, Field(ge=0, le=100)] | None = None
    status: Annotated[str, Field(min_length=1, max_length=40), Storable, NotBlank] | None = None
    technicianIds: Annotated[
        list[Annotated[int, Field(gt=0, le=MAX_ID)]],
        Field(max_length=100, description="Admins: the project's technicians from now on; "
                                          "those taken off leave its rooms at once"),
    ] | None = None


class TicketIn(Body):
    projectId: Annotated[int, Field(gt=0, le=MAX_ID)]
    subject: Annotated[str, Field(min_length=1, max_length=300), Storable]
    priority: Literal["low", "normal", "high", "urgent"] = "normal"


class TicketOut(BaseModel):
    id: int
    projectId: int
    subject: str
    status: str
    priority: str


def _project_out(p: Project) -> ProjectOut:
    return ProjectOut(id=p.id, name=p.name, clientId=p.client_id,
                      technicianIds=p.technician_ids, progress=p.progress, status=p.status)


@router.post("/users", status_code=201, response_model=UserOut, tags=["admin"])
def create_user(body: UserIn, who: Caller, db: DB) -> UserOut:
    """Create a user (admin)."""
    access.require_admin(who)
    user = projects.create_user(db, email=body.email, role=body.role, name=body.name)
    return UserOut(id=user.id, email=user.email, role=user.role, name=user.name)


@router.post("/projects", status_code=201, response_model=ProjectOut, tags=["admin"])
def create_project(body: ProjectIn, who: Caller, db: DB) -> ProjectOut:
    """Create a project with its client and technicians (admin)."""
    access.require_admin(who)
    project = projects.create_project(db, name=body.name, client_id=body.clientId,
                                    technician_ids=body.technicianIds)
    return _project_out(project)


@router.get("/projects/{project_id}", response_model=ProjectOut, tags=["projects"])
def get_project(project_id: PathId, who: Caller, db: DB) -> ProjectOut:
    """A project the caller may read."""
    access.require_project_reader(db, who, project_id)
    return _project_out(access.get_project(db, project_id))


@router.patch("/projects/{project_id}", response_model=ProjectOut, tags=["projects"])
async def patch_project(project_id: PathId, body: ProjectPatch, who: TokenCaller,
                        ctx: Context) -> Any:
    """Change progress/status (and, admins, technicians); writes `project-updated` and
    notifies the client. An empty body changes and writes nothing."""
    # async: the caller's row, the change and its events in one transaction in ONE worker
    # thread (committed before the answer), which then nudges the relay; after the answer
    # the sockets of technicians taken off leave the project's rooms.
    answer, removed = await write_then_nudge(ctx, lambda: _patch(ctx, who, project_id, body))
    later = BackgroundTasks()
    for user_id, rooms in removed:
        later.add_task(ctx.node.revoke, user_id, rooms)
    return Response(answer, media_type="application/json", background=later)


def _view_out(view: projects.ProjectView) -> ProjectOut:
    return ProjectOut(id=view.id, name=view.name, clientId=view.client_id,
                      technicianIds=view.technician_ids, progress=view.progress,
                      status=view.status)


def _patch(ctx: AppContext, who: Principal, project_id: int, body: ProjectPatch
           ) -> tuple[tuple[bytes, list[tuple[int, list[str]]]], set[str]]:
    """((the answer, [(user taken off, rooms to leave)]), streams to nudge)."""
    touched: set[str] = set()
    quick = (body.technicianIds is None and (body.progress is not None or body.status is not None)
             and ctx.engine.dialect.name == "postgresql")
    done = projects.set_progress_pipelined(ctx.engine, who, project_id, progress=body.progress,
                                           status=body.status) if quick else None
    if done is not None:
        view, streams = done
        return (_view_out(view).model_dump_json().encode(), []), streams
    with ctx.factory() as session, session.begin():
        if quick:  # refusals, and the rare missing stream: as before (checks the caller too)
            view = projects.set_progress(session, who, project_id, progress=body.progress,
                                         status=body.status, nudge=touched.update)
            return (_view_out(view).model_dump_json().encode(), []), touched
        access.check_user_row(session, who)
        project, removed = projects.update_project(session, who, project_id,
                                                   progress=body.progress, status=body.status,
                                                   technician_ids=body.technicianIds)
        rooms = projects.project_rooms(session, project_id) if removed else []
        answer = _project_out(project).model_dump_json().encode()
    return (answer, [(user_id, rooms) for user_id in removed]), touched


@router.post("/tickets", status_code=201, response_model=TicketOut, tags=["admin"])
def create_ticket(body: TicketIn, who: Caller, db: DB) -> TicketOut:
    """Open a ticket on a project (admin)."""
    access.require_admin(who)
    t = projects.create_ticket(db, project_id=body.projectId, subject=body.subject,
                             priority=body.priority)
    return TicketOut(id=t.id, projectId=t.project_id, subject=t.subject, status=t.status,
                     priority=t.priority)


__all__ = ["router"]
