"""`python -m app.web`: what the launcher does beyond uvicorn's defaults."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import resource
import weakref
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from app import web
from app.core.slotted_ws import PER_CONNECTION, SlottedWebSocketProtocol, websocket_protocol


def slotted_protocol() -> Any:
    """The protocol the web node serves websockets with (its own loop, never run)."""
    config = Config(app=lambda *a: None, ws=websocket_protocol(), lifespan="off",
                    log_config=None)
    config.load()
    loop = asyncio.new_event_loop()
    try:
        return SlottedWebSocketProtocol(config, ServerState(), {}, _loop=loop)
    finally:
        loop.close()


def record(msg: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", level, __file__, 1, msg, args or None, None)


def test_uvicorns_lines_per_accepted_websocket_are_left_out() -> None:
    keep = web.PerConnectionLines().filter
    assert not keep(record("connection open"))
    assert not keep(record("connection closed"))
    assert not keep(record('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/socket.io/"))
    # Refusals, start-up and errors stay.
    assert keep(record('%s - "WebSocket %s" 403', "127.0.0.1:5", "/socket.io/?sid=x"))
    assert keep(record('%s - "WebSocket %s" %d', "127.0.0.1:5", "/x", 500))
    assert keep(record("Application startup complete."))


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert web.raise_fd_limit() == (hard if hard != resource.RLIM_INFINITY else
                                        resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_start_up_objects_are_frozen_and_later_garbage_still_collected() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    try:
        assert web.freeze_start_up() > 0
        late = Cycle()
        ref = weakref.ref(late)
        del late
        gc.collect()  # created after the freeze: collected as usual
        assert ref() is None
    finally:
        gc.unfreeze()


def test_young_collections_run_every_five_thousand_new_objects_after_start_up() -> None:
    before = gc.get_threshold()
    try:
        web.freeze_start_up()
        assert gc.get_threshold() == (20_000, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_uvicorns_lines_per_accepted_websocket_are_never_built() -> None:
    # The web node's websocket protocol logs through a logger that drops those lines
    # before a LogRecord exists (the filter above would drop them only once made).
    protocol = slotted_protocol()
    built: list[str] = []
    where: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        built.append(record.getMessage())
        where.append(record.pathname)
        return record

    uvicorn_error = logging.getLogger("uvicorn.error")
    level = uvicorn_error.level
    logging.setLogRecordFactory(counting)
    uvicorn_error.setLevel(logging.INFO)
    try:
        for logger in (protocol.logger, protocol.conn.logger):
            logger.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/socket.io/")
            logger.info("connection open")
            logger.info("connection closed")
        assert built == []
        # Refusals and errors are still uvicorn.error's lines.
        protocol.logger.info('%s - "WebSocket %s" 403', "127.0.0.1:5", "/socket.io/")
        protocol.conn.logger.error("parser failed")
        assert built == ['127.0.0.1:5 - "WebSocket /socket.io/" 403', "parser failed"]
        assert where[0] == __file__  # the line that logged it, not the wrapper's
    finally:
        logging.setLogRecordFactory(factory)
        uvicorn_error.setLevel(level)


def test_the_quiet_lines_are_the_ones_uvicorn_and_websockets_log() -> None:
    # Should either change its wording, its line would be built (and filtered) again.
    from uvicorn.protocols.websockets import websockets_sansio_impl
    from websockets import protocol, server

    assert "'%s - \"WebSocket %s\" [accepted]'" in inspect.getsource(
        websockets_sansio_impl.WebSocketsSansIOProtocol.send)
    assert 'self.logger.info("connection open")' in inspect.getsource(
        server.ServerProtocol.send_response)
    assert 'self.logger.info("connection closed")' in inspect.getsource(
        protocol.Protocol.discard)
    assert set(PER_CONNECTION) == {'%s - "WebSocket %s" [accepted]', "connection open",
                                   "connection closed"}
