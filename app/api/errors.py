"""Every error as `{"error": {"code", "message"}}` with its status; never a 500 for bad input."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.db import UNAVAILABLE
from app.core.errors import HeraldError, RateLimited

log = logging.getLogger("herald.api")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, malformed, expired or wrongly signed token"},
    403: {"description": "The caller may not do this"},
    404: {"description": "Unknown id"},
    422: {"description": "Invalid body"},
    503: {"description": "The database is unavailable; retry later"},
}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _union_tag(part: object) -> bool:
    """pydantic names the branch of a union in `loc` by its type (`EventIn`, `list[EventIn]`);
    body fields are camelCase names."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part)


def _relevant(errors: Sequence[Any], body: Any) -> list[tuple[tuple[Any, ...], str]]:
    """(loc without `body` and union tags, msg), keeping only the union branch that matches
    the body's shape: an object's errors never talk about lists, a list's name the item."""
    out = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if loc[:1] == ("body",):
            loc = loc[1:]
        if loc and _union_tag(loc[0]):
            is_list_branch = str(loc[0]).startswith("list[")
            if is_list_branch != isinstance(body, list):
                continue
            loc = loc[1:]
        out.append((loc, str(err.get("msg", "invalid"))))
    return out


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for loc, msg in _relevant(exc.errors(), getattr(exc, "body", None))[:5]:
        where = ".".join(str(p) for p in (loc[1:] if loc and isinstance(loc[0], int) else loc))
        prefix = f"item {loc[0]}: " if loc and isinstance(loc[0], int) else ""
        parts.append(f"{prefix}{where or 'body'}: {msg}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(HeraldError)
    async def herald_error(_request: Request, exc: HeraldError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid", _validation_message(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's "error parsing the body": an invalid body
            return JSONResponse(error_body("invalid", "the body is not valid JSON"),
                                status_code=422)
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return JSONResponse(error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)),
                            status_code=exc.status_code)

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        """The database is down, restarting or unreachable: 503, not a 500; retry later."""
        log.warning("database unavailable method=%s path=%s error=%s", request.method,
                    request.url.path, type(getattr(exc, "orig", None) or exc).__name__)
        return JSONResponse(error_body("unavailable", "the database is unavailable; retry later"),
                            status_code=503, headers={"Retry-After": "5"})

    for unavailable in UNAVAILABLE:
        app.add_exception_handler(unavailable, database_unavailable)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request crashed method=%s path=%s", request.method, request.url.path)
        return JSONResponse(error_body("internal", "internal error"), status_code=500)
