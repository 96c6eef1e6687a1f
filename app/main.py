"""The ASGI app: Socket.IO at /socket.io/, the HTTP API at /api, health, metrics, docs."""

from __future__ import annotations

from typing import Any

import socketio
from fastapi import FastAPI

from app.api import (
    catalogue,
    dev,
    errors,
    events,
    health,
    inbox,
    metrics,
    notifications,
    pages,
    portal,
    reads,
    streams,
    tickets,
)
from app.api.admin import router as admin_router
from app.api.bodylimit import BodyLimit
from app.api.deps import AppContext
from app.api.nodebeat import lifespan
from app.api.shutdown import OnShutdown
from app.core import logs, names
from app.core.db import make_engine, make_session_factory
from app.core.ratelimit import RateLimits
from app.core.redisclients import SideChannels
from app.core.settings import Settings, get_settings
from app.gateway import hooks
from app.gateway.bounds import SocketBounds
from app.gateway.node_metrics import NodeMetrics
from app.gateway.server import MAX_FRAME, Gateway
from app.outbox.nudge import relay_nudger


def create_app(settings: Settings | None = None) -> Any:
    """Build the web process from `settings`: one engine, one nudger, one Socket.IO server,
    one FastAPI app whose lifespan closes them."""
    settings = settings or get_settings()
    logs.setup(settings.log_level, settings.log_rate)
    engine = make_engine(settings.database_url, **settings.db_timeouts)
    nudger = relay_nudger(settings)
    factory = make_session_factory(engine, nudge=nudger)
    limits = RateLimits(settings, redis_url=settings.sio_redis_url,
                        prefix=names.key(settings.socketio_channel, "limits"))
    gateway = Gateway(session_factory=factory, secret=settings.secret,
                      redis_url=settings.sio_redis_url, channel=settings.socketio_channel,
                      metrics=NodeMetrics(), cors_origins=settings.allowed_origins,
                      connect_timeout=settings.connect_timeout, limits=limits,
                      max_connections=settings.max_connections,
                      fast_fanout=settings.fast_fanout,
                      bounds=SocketBounds.of(settings))
    # private hooks of the libraries, checked once: fast paths missing one fall back (logged)
    gateway.metrics.fastpaths = hooks.apply(gateway)
    ctx = AppContext(settings=settings, engine=engine, factory=factory,
                     redis=SideChannels(settings), node=gateway, limits=limits,
                     closers=[nudger])

    api = FastAPI(title="Herald", version="0.1.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None,  # /docs is served from vendored files (app/api/pages.py)
                  description="Event-sourced notifications: outbox, relay, Socket.IO, replay.")
    api.state.ctx = ctx
    errors.install(api)
    gateway.manager.room_channels = settings.room_channels  # typing: per room or shared
    for router in (health.router, portal.router, streams.router, tickets.router,
                   catalogue.router, events.router, notifications.router, reads.router,
                   inbox.router):
        api.include_router(router)
    if dev.enabled(settings):  # demo tokens for the /portal user picker
        api.include_router(dev.router)
    for router in (admin_router, metrics.router):  # operators: outbox, /metrics
        api.include_router(router)
    pages.mount(api)  # /portal and /ops, and the files they import
    sio_app = socketio.ASGIApp(gateway.sio, other_asgi_app=api, socketio_path="socket.io")
    bounded = BodyLimit(sio_app, max_body=settings.max_body, frame_limit=MAX_FRAME,
                        small_body=settings.max_small_body, secret=settings.secret)
    asgi = OnShutdown(bounded, gateway.sio.close_transports)
    asgi.herald = ctx  # type: ignore[attr-defined]  # for tests and tools
    return asgi


def __getattr__(name: str) -> Any:
    # `app.main:app` is built on first access, so importing this module reads no settings.
    if name == "app":
        value = create_app()
        globals()["app"] = value
        return value
    raise AttributeError(name)
