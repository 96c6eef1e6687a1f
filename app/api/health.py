"""/healthz: the process is up. /readyz: the database and Redis answer (503 naming what is down).

Redis means the Socket.IO message queue (`SOCKETIO_REDIS_URL`) and, when it is another
server, the Celery broker (`REDIS_URL`) that web nodes nudge the relay through. /readyz
needs no token, so its answer is reused for a second (`Recent`): a flood of it costs the
database one query a second.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import AppContext, Context
from app.api.recent import Recent

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(ctx: Context) -> JSONResponse:
    recent = ctx.recent.setdefault("readyz", Recent())
    checks: dict[str, Any] = await recent.get(lambda: asyncio.to_thread(_checks, ctx))
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)


def _checks(ctx: AppContext) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"down: {type(exc).__name__}"
    for name, client in ctx.redis.named().items():
        try:
            if not client.ping():
                raise ConnectionError("no answer")
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"down: {type(exc).__name__}"
    return checks
