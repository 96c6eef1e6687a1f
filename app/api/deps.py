"""FastAPI dependencies: the app's typed context and its lifespan, a transactional session,
the caller."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.core.db import session_nudger
from app.core.errors import AuthError
from app.core.ratelimit import RateLimits
from app.core.redisclients import SideChannels
from app.core.settings import Settings
from app.outbox.writer import nudge_with
from app.portal.access import check_user_row
from app.portal.auth import Principal, decode_cached

T = TypeVar("T")


class NodeStats(Protocol):
    """One web node's numbers at scrape time (app.gateway.node_metrics.NodeSnapshot)."""

    @property
    def node(self) -> str: ...
    @property
    def sockets(self) -> int: ...
    @property
    def rooms(self) -> int: ...
    @property
    def memberships(self) -> int: ...
    @property
    def replayed(self) -> int: ...
    @property
    def refused(self) -> dict[str, int]: ...
    @property
    def messages_received(self) -> int: ...
    @property
    def room_channels(self) -> int: ...
    @property
    def fastpaths(self) -> dict[str, bool]: ...
    @property
    def page_requests(self) -> dict[str, int]: ...
    @property
    def page_reads(self) -> dict[str, int]: ...
    @property
    def gate_overflows(self) -> int: ...


class Node(Protocol):
    """What the HTTP API needs of this node's Socket.IO gateway (app.gateway.server.Gateway)."""

    def snapshot(self) -> NodeStats: ...

    async def revoke(self, user_id: int, rooms: list[str]) -> int: ...

    async def presence_of(self, stream: str) -> list[dict[str, Any]]: ...


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass
class AppContext:
    """What the web process holds, opened by create_app and closed by `lifespan`."""

    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    redis: SideChannels
    node: Node
    limits: RateLimits | None = None
    closers: list[Closeable] = field(default_factory=list)
    recent: dict[str, Any] = field(default_factory=dict)  # answers reused for a second

    def close(self) -> None:
        """Close what the context opened: side-channel clients, the nudger, the engine."""
        self.redis.close()
        for closer in self.closers:
            closer.close()
        self.engine.dispose()


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    """FastAPI's lifespan: resources are opened by create_app; closed here at shutdown."""
    yield
    get_context_of(api).close()


def get_context_of(api: FastAPI) -> AppContext:
    ctx = api.state.ctx
    assert isinstance(ctx, AppContext)
    return ctx


async def get_context(request: Request) -> AppContext:
    """async: FastAPI runs a sync dependency in a worker thread, a hand-off for nothing."""
    ctx = request.app.state.ctx
    assert isinstance(ctx, AppContext)
    return ctx


Context = Annotated[AppContext, Depends(get_context)]


def get_db(ctx: Context) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    with ctx.factory() as session, session.begin():
        yield session


# scope="function": commit before the response is sent (the default runs it after: a 2xx
# could precede the commit, or a failed commit). See tests/test_durability.py.
DB = Annotated[Session, Depends(get_db, scope="function")]


# Declares the bearer scheme in OpenAPI (so /docs "Authorize" sends the header); the header
# itself is read below, with Herald's own error codes.
BEARER = HTTPBearer(auto_error=False, bearerFormat="JWT",
                    description="A token from `herald token` (or POST /api/dev/token in "
                                "development)")


def token_principal(request: Request, ctx: AppContext) -> Principal:
    """The bearer token's principal (signature and claims checked; remembered until it
    expires), without looking at the database."""
    header = request.headers.get("authorization")
    if not header:
        raise AuthError("missing bearer token", code="token_missing")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("expected 'Authorization: Bearer <token>'", code="token_invalid")
    return decode_cached(token.strip(), secret=ctx.settings.secret)


def _check_row(ctx: AppContext, who: Principal) -> None:
    with ctx.factory() as session:
        check_user_row(session, who)


WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def limit_writes(request: Request, ctx: AppContext, who: Principal) -> None:
    """A user's HTTP writes count against `HERALD_RATE_WRITES` (`429` past it); a service's
    do not (services publish in batches, from the backend)."""
    if request.method in WRITES and ctx.limits is not None and who.user_id is not None:
        await ctx.limits.check("write", who.user_id)


async def get_principal(request: Request, ctx: Context,
                        _scheme: Annotated[object, Security(BEARER)] = None) -> Principal:
    """The caller. A service's token is all there is to check (no thread, no database); a
    user's row is checked in a worker thread (the user must still exist with that role).
    A user's writes are rate-limited (`limit_writes`)."""
    who = token_principal(request, ctx)
    await limit_writes(request, ctx, who)
    if who.role != "service":
        await run_in_threadpool(_check_row, ctx, who)
    return who


Caller = Annotated[Principal, Depends(get_principal)]


async def get_token_principal(request: Request, ctx: Context,
                              _scheme: Annotated[object, Security(BEARER)] = None) -> Principal:
    """The token's principal, its user's row NOT checked: for a route that calls
    `check_user_row` itself, in its own transaction (one worker thread, not two)."""
    who = token_principal(request, ctx)
    await limit_writes(request, ctx, who)
    return who


TokenCaller = Annotated[Principal, Depends(get_token_principal)]


_WRITERS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="herald-write")


async def write_then_nudge(ctx: AppContext, work: Callable[[], tuple[T, set[str]]]) -> T:
    """Run `work` (a transaction: answers (its result, the streams it appended to)) in a
    worker thread; hand its result back as soon as it has committed, then nudge the relay
    from that same thread while the answer goes out: one thread hand-off per write, not
    two, and nobody waits on the broker. A failed nudge is logged, never raised."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def run() -> None:
        try:
            result, streams = context.run(work)
        except BaseException as exc:  # handed to the request, raised there
            loop.call_soon_threadsafe(_settle, done, None, exc)
            return
        loop.call_soon_threadsafe(_settle, done, result, None)
        nudge_streams(ctx, streams)

    _WRITERS.submit(run)
    return await done


def _settle(done: asyncio.Future[T], result: T | None, exc: BaseException | None) -> None:
    if done.done():  # the request was cancelled (the client went away)
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(result)  # type: ignore[arg-type]


def nudge_streams(ctx: AppContext, streams: set[str]) -> None:
    """Nudge the relay for `streams` (committed moments ago): a background task run after
    the response, in a worker thread, so that neither the caller nor the event loop waits
    on the broker. A failure is logged, never raised (the workers' sweep relays)."""
    nudger = session_nudger(ctx.factory)
    if nudger is not None and streams:
        nudge_with(nudger, sorted(streams))
