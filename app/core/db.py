"""Database engine and sessions: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or PostgreSQL."""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# The database is down, restarting, unreachable or out of connections: worth a retry later
# (HTTP 503, a transport close for sockets), never a 500.
UNAVAILABLE: tuple[type[Exception], ...] = (sa_exc.OperationalError, sa_exc.InterfaceError,
                                            sa_exc.TimeoutError)


class Base(DeclarativeBase):
    """Declarative base of every table, with stable constraint names for migrations."""

    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_utc(ts: datetime) -> str:
    """`2026-01-02T03:04:05.678Z`: UTC to the millisecond (SQLite hands back naive UTC)."""
    plain = ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts
    return plain.isoformat(timespec="milliseconds") + "Z"


def make_engine(url: str, *, connect_timeout: float = 5.0, statement_timeout: float = 30.0,
                **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and write-locking transactions.

    PostgreSQL gets bounded waits, so that a database that is down or unreachable costs a
    request a few seconds and a clear error, never a hang: `connect_timeout` (seconds to
    open a connection), `statement_timeout` (seconds a statement may run; 0: no limit),
    a pool checkout wait of `connect_timeout` too, and a ping of a connection that sat
    in the pool for PING_IDLE seconds or more, or whose socket has input waiting (the
    server ended it: a restart, a terminated backend), so that the first request after a
    database restart gets a fresh connection instead of a dead one. (A connection used
    moments ago with nothing waiting is not pinged: the ping is a round trip that a busy
    node would pay on every request. The pool hands out the most recently used first.)
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _sqlite_pragmas(engine)
        return engine
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("connect_timeout", max(1, round(connect_timeout)))
    if statement_timeout > 0:
        connect_args.setdefault("options",
                                f"-c statement_timeout={int(statement_timeout * 1000)}")
    kwargs["connect_args"] = connect_args
    kwargs.setdefault("pool_timeout", connect_timeout)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_use_lifo", True)
    if "pool_pre_ping" in kwargs:
        return create_engine(url, **kwargs)
    engine = create_engine(url, **kwargs)
    _ping_when_idle(engine, PING_IDLE)
    return engine


PING_IDLE = 1.0  # seconds in the pool after which a connection is pinged before use


def _has_input(dbapi_conn: Any) -> bool:
    """True if the server sent something to this idle connection: a server that shuts
    down or ends the session says so (FATAL) or closes the socket, which makes it
    readable. No round trip: one select() with no wait. Then the connection is pinged
    (and replaced), however recently it was used — a restart within PING_IDLE is seen."""
    fileno = getattr(dbapi_conn, "fileno", None)
    if fileno is None:
        return True
    try:
        readable, _, _ = select.select([fileno()], [], [], 0)
    except (OSError, ValueError, TypeError):  # closed, or no socket: ping to find out
        return True
    return bool(readable)
_USED = "herald.used"


def _ping_when_idle(engine: Engine, idle: float) -> None:
    """pool_pre_ping, for connections idle `idle` seconds or more only."""

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_conn: Any, record: Any) -> None:
        record.info[_USED] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_USED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_USED, 0.0) < idle and not _has_input(dbapi_conn):
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # a dead connection: the pool opens a new one
            raise sa_exc.DisconnectionError(f"ping failed: {type(exc).__name__}") from exc


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: a deferred transaction that reads and then
        # writes can fail with SQLITE_BUSY instead of waiting its turn.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# Session.info key of the relay nudger that the outbox's writer calls after a commit.
NUDGER = "herald.nudger"


def make_session_factory(engine: Engine, *,
                         nudge: Callable[[list[str]], None] | None = None) -> sessionmaker[Session]:
    """Sessions on `engine`; `nudge` (if given) is called with the streams a commit appended to."""
    return sessionmaker(engine, expire_on_commit=False,
                        info={NUDGER: nudge} if nudge is not None else None)


def session_nudger(factory: sessionmaker[Session]) -> Callable[[list[str]], None] | None:
    """The nudger `make_session_factory` gave `factory`, if any."""
    info = factory.kw.get("info") or {}
    nudger: Callable[[list[str]], None] | None = info.get(NUDGER)
    return nudger


def plan_settings(**settings: str) -> str:
    """PostgreSQL: a SELECT that sets planner `settings` (`enable_sort="off"`, ...) for the
    rest of the transaction (`set_config(..., true)`: nothing leaks into a pooled
    connection), and JIT off with them. Statistics lag behind a queue: ruling a plan out
    keeps a statement on its ordered index walk whatever they count. JIT is off because a
    plan left with no other choice counts the ruled-out node's penalty as its cost, and
    JIT would compile that plan (hundreds of ms for a few rows)."""
    return "SELECT " + ", ".join(f"set_config('{name}', '{value}', true)"
                                 for name, value in {**settings, "jit": "off"}.items())


@contextmanager
def planned(session: Session, **settings: str) -> Iterator[None]:
    """`plan_settings` in the session's transaction while it holds, then set back as they
    were (so the transaction's later statements plan as before). Nothing on SQLite. If a
    statement inside fails, the transaction is lost, and the settings with it."""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    names = [*settings, "jit"]
    before = session.execute(text(
        "SELECT " + ", ".join(f"current_setting('{name}')" for name in names) + ", "
        + plan_settings(**settings).removeprefix("SELECT "))).one()
    yield
    session.execute(text("SELECT " + ", ".join(
        f"set_config('{name}', :v{i}, true)" for i, name in enumerate(names))),
        {f"v{i}": before[i] for i in range(len(names))})
