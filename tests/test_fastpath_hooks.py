"""The private hooks of the gateway's fast paths are checked at start (docs/fastpaths.md).

On the pinned versions every hook is there; a missing one switches its fast path off
(python-socketio's or engine.io's own path instead), with one log line and
`herald_fastpath_enabled{path} 0`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import engineio
import httpx
import pytest
from engineio.async_drivers import asgi as eio_asgi

from app.core import slotted_ws
from app.core.settings import Settings
from app.gateway import direct, hooks, sendqueue
from app.gateway import environ as eio_environ
from app.gateway import sio as sio_module
from app.main import create_app
from testkit.databases import Database


def test_every_hook_is_there_on_the_pinned_versions() -> None:
    assert {path: what for path, what in hooks.check().items() if what} == {}


def test_every_hook_is_found_after_an_event_loop_was_closed_in_the_thread() -> None:
    """asyncio.run() leaves the thread with no current loop; the check must not need one."""
    async def nothing() -> None:
        return None

    asyncio.run(nothing())
    hooks._uvicorn.cache_clear()
    hooks.check.cache_clear()
    assert {path: what for path, what in hooks.check().items() if what} == {}


def test_checking_the_hooks_leaves_the_logging_configuration_alone() -> None:
    """The throwaway uvicorn protocol must not install uvicorn's logging over Herald's."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access"]

    def state() -> list[tuple[Any, ...]]:
        return [(tuple(logging.getLogger(n).handlers), logging.getLogger(n).propagate,
                 logging.getLogger(n).level) for n in names]

    before = state()
    hooks._uvicorn.cache_clear()
    assert hooks._uvicorn() is not None
    assert state() == before


def test_docs_fastpaths_names_every_fast_path_and_protection() -> None:
    from testkit.processes import ROOT

    doc = (ROOT / "docs" / "fastpaths.md").read_text()
    for path in [*hooks.FASTPATHS, *hooks.PROTECTIONS]:
        assert f"`{path}`" in doc, path
    for hook in hooks.HOOKS:
        assert hook.what in doc, hook.what


@pytest.fixture
def app(sqlite_db: Database, redis_url: str) -> Iterator[Any]:
    asgi = create_app(Settings(database_url=sqlite_db.url, redis_url=redis_url))
    yield asgi
    asgi.herald.close()


@pytest.fixture
def missing(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, tuple[str, ...]]]:
    """hooks.check() as if some hooks were gone (fill the dict); module switches restored."""
    gone: dict[str, tuple[str, ...]] = {}
    real = hooks.check()
    monkeypatch.setattr(hooks, "check", lambda: {**real, **gone})
    monkeypatch.setattr(direct, "_SANSIO", direct._SANSIO)
    monkeypatch.setattr(direct, "CONNECT_WRITES", direct.CONNECT_WRITES)
    monkeypatch.setattr(sio_module, "LEAN", sio_module.LEAN)
    monkeypatch.setattr(sendqueue, "HEARTBEAT_WHEEL", sendqueue.HEARTBEAT_WHEEL)
    monkeypatch.setattr(slotted_ws, "LEAN_UPGRADE", slotted_ws.LEAN_UPGRADE)
    yield gone


async def _scrape(app: Any) -> str:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://herald") as client:
        return (await client.get("/metrics")).text


@pytest.mark.anyio
async def test_the_web_node_reports_each_fast_path_on(app: Any) -> None:
    text = await _scrape(app)
    for path in hooks.FASTPATHS:
        assert f'path="{path}"}} 1.0' in text, path


def test_a_missing_fanout_hook_falls_back_to_python_socketio(
    missing: dict[str, tuple[str, ...]], app: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = app.herald.node
    missing["inline_fanout"] = ("AsyncManager.get_participants",)
    with caplog.at_level(logging.WARNING, logger="herald.gateway.hooks"):
        on = hooks.apply(gateway)
    assert gateway.manager.fast_fanout is False
    assert on["inline_fanout"] is False and on["direct_writes"] is False
    assert [r.getMessage() for r in caplog.records] == [
        "fast path off: inline_fanout (missing: AsyncManager.get_participants); using "
        "python-socketio's emit (a task per socket)"]


def test_a_missing_uvicorn_hook_stops_direct_writes(
    missing: dict[str, tuple[str, ...]], app: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    missing["direct_writes"] = ("uvicorn's WebSocketsSansIOProtocol",)
    with caplog.at_level(logging.WARNING, logger="herald.gateway.hooks"):
        on = hooks.apply(app.herald.node)
    assert on["direct_writes"] is False and on["inline_fanout"] is True
    assert direct._protocol_of(object()) is None  # no writer is ever idle: the queue path
    assert len(caplog.records) == 1 and "direct_writes" in caplog.records[0].getMessage()


def test_a_missing_accept_hook_writes_each_packet_on_its_own(
    missing: dict[str, tuple[str, ...]], app: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    missing["connect_writes"] = ("uvicorn's accept writes the 101 through self.transport",)
    with caplog.at_level(logging.WARNING, logger="herald.gateway.hooks"):
        on = hooks.apply(app.herald.node)
    assert on["connect_writes"] is False and on["direct_writes"] is True
    assert direct.CONNECT_WRITES is False
    assert len(caplog.records) == 1 and "connect_writes" in caplog.records[0].getMessage()


def test_missing_direct_writes_stop_connect_writes_too(
    missing: dict[str, tuple[str, ...]], app: Any,
) -> None:
    missing["direct_writes"] = ("uvicorn's WebSocketsSansIOProtocol",)
    on = hooks.apply(app.herald.node)
    assert on["connect_writes"] is False and direct.CONNECT_WRITES is False


def test_missing_queue_internals_give_engineio_its_own_queues_back(
    missing: dict[str, tuple[str, ...]], app: Any,
) -> None:
    gateway = app.herald.node
    missing["lean_queues"] = ("asyncio.Event _waiters",)
    missing["session_ids"] = ("AsyncServer._handle_connect calls generate_id",)
    on = hooks.apply(gateway)
    assert on["lean_queues"] is False and on["session_ids"] is False
    eio = gateway.sio.eio
    assert type(eio.create_queue()) is not sio_module.LeanQueue
    assert eio.generate_id.__func__ is engineio.AsyncServer.generate_id
    assert sio_module.LEAN is False


@pytest.mark.anyio
async def test_a_missing_heartbeat_hook_gives_engineio_its_ping_task_back(
    missing: dict[str, tuple[str, ...]], app: Any,
) -> None:
    missing["heartbeat_wheel"] = ("AsyncSocket.schedule_ping on PONG",)
    on = hooks.apply(app.herald.node)
    assert on["heartbeat_wheel"] is False and sendqueue.HEARTBEAT_WHEEL is False
    socket = sendqueue.HeraldSocket.__new__(sendqueue.HeraldSocket)
    socket.server, socket.last_ping = app.herald.node.sio.eio, 1.0
    tasks = len(asyncio.all_tasks())
    socket.schedule_ping()  # engine.io's own: a task sleeping until the PING
    assert len(asyncio.all_tasks()) == tasks + 1
    for task in asyncio.all_tasks():
        if task.get_coro().__qualname__.endswith("_send_ping"):  # type: ignore[union-attr]
            task.cancel()


def test_a_missing_upgrade_hook_gives_uvicorn_its_own_upgrade_back(
    missing: dict[str, tuple[str, ...]], app: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    missing["lean_upgrade"] = ("websockets' ServerProtocol.accept is the one copied",)
    with caplog.at_level(logging.WARNING, logger="herald.gateway.hooks"):
        on = hooks.apply(app.herald.node)
    assert on["lean_upgrade"] is False and slotted_ws.LEAN_UPGRADE is False

    class Http:  # an upgrade the lean way would take, were it on
        ws_protocol_class = slotted_ws.SlottedWebSocketProtocol
        logger = logging.getLogger("uvicorn.error")
        scope = {"method": "GET", "headers": [(b"host", b"h")]}
        url = b"/socket.io/"

    assert slotted_ws.upgrade(Http()) is False  # nothing done: uvicorn's own
    assert [r.getMessage() for r in caplog.records] == [
        "fast path off: lean_upgrade (missing: websockets' ServerProtocol.accept is the one "
        "copied); using uvicorn's upgrade (the head written out and parsed again by "
        "websockets)"]


def test_a_changed_translate_request_gives_engineio_its_own_back(
    missing: dict[str, tuple[str, ...]], app: Any,
) -> None:
    eio = app.herald.node.sio.eio
    assert eio._async["translate_request"] is eio_environ.translate_request
    missing["payload_class"] = ("engine.io's ASGI translate_request is the one copied",)
    on = hooks.apply(app.herald.node)
    assert on["payload_class"] is False
    assert eio._async["translate_request"] is eio_asgi.translate_request


def test_a_missing_protection_hook_is_an_error_line(
    missing: dict[str, tuple[str, ...]], app: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    missing["connect_timeout"] = ("AsyncServer._handle_eio_connect",)
    with caplog.at_level(logging.WARNING, logger="herald.gateway.hooks"):
        hooks.apply(app.herald.node)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == ("protection inactive: connect_timeout (missing: "
                                   "AsyncServer._handle_eio_connect)")


def test_a_copied_function_is_recognised_by_its_source_and_a_changed_one_is_not() -> None:
    """The fast paths that copy a library's function (engine.io's translate_request,
    websockets' accept) run only on the source they copied: its digest, checked at start."""
    from websockets.server import ServerProtocol

    assert hooks._same_source(eio_asgi.translate_request, eio_environ.SOURCE_SHA256)
    assert hooks._same_source(ServerProtocol.accept, slotted_ws.ACCEPT_SHA256)
    assert not hooks._same_source(ServerProtocol.accept, eio_environ.SOURCE_SHA256)
    assert not hooks._same_source(eio_environ.translate_request, eio_environ.SOURCE_SHA256)
