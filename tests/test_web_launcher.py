"""`python -m app.web`: what the launcher does beyond uvicorn's defaults."""

from __future__ import annotations

import gc
import logging
import resource
import weakref

from app import web


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
