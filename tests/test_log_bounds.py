"""Log lines a client can cause are bounded: in length, in kind (no traceback for a client's
bad packet) and in rate (per logger and message)."""

from __future__ import annotations

import json
import logging

from app.core import logs


def record(msg: str, *args: object, name: str = "herald.gateway", created: float = 1000.0,
           exc: BaseException | None = None) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args or None,
                            (type(exc), exc, exc.__traceback__) if exc else None)
    rec.created = created
    return rec


def test_a_client_chosen_string_is_cut_to_a_bounded_line() -> None:
    line = logs.JsonFormatter().format(record("socket disconnected reason=%s", "r" * 10_000_000))
    assert len(line) < 3 * logs.MAX_MSG
    assert "more characters]" in json.loads(line)["msg"]


def test_lines_of_one_kind_are_rate_limited_then_counted() -> None:
    limit = logs.RateLimit(3)
    kept = [limit.filter(record("socket refused sid=%s", i)) for i in range(10)]
    assert kept == [True] * 3 + [False] * 7
    assert limit.filter(record("another kind of line"))  # counted apart
    later = record("socket refused sid=%s", 99, created=1001.0)
    assert limit.filter(later)
    assert later.getMessage() == "socket refused sid=99 [7 lines like this one suppressed]"


def test_loggers_clients_do_not_reach_are_not_rate_limited() -> None:
    limit = logs.RateLimit(1)
    assert all(limit.filter(record("relay batch", name="herald.relay")) for _ in range(5))


def _bad_packet_error() -> ValueError:
    from socketio.packet import Packet
    try:
        Packet(encoded_packet="2[not json")
    except ValueError as exc:
        return exc
    raise AssertionError("decoded")


def test_a_clients_bad_packet_is_one_warning_line_without_traceback() -> None:
    rec = record("message async handler error", name="engineio.server", exc=_bad_packet_error())
    assert logs.ClientPacketErrors().filter(rec)
    assert rec.exc_info is None and rec.levelname == "WARNING"
    assert rec.getMessage().startswith("bad packet from a client: JSONDecodeError")


def test_an_error_in_herald_code_keeps_its_traceback() -> None:
    try:
        raise ValueError("a bug of ours")
    except ValueError as exc:
        rec = record("message async handler error", name="engineio.server", exc=exc)
    assert logs.ClientPacketErrors().filter(rec)
    assert rec.exc_info is not None
