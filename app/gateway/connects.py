"""What a connect reads from the database, read for many connects at once.

Each connect needs its user's row (a deleted user, or one whose role changed, is refused)
and the heads of its streams. One transaction on a worker thread per connect made the
database the largest cost of a connect storm (thread hand-off, BEGIN, three SELECTs,
COMMIT, each waiting its turn on the cores). Here connects that arrive while a read is
under way wait for the next one, which serves them all: one thread hand-off, the user
rows and the streams' heads each in one `IN` query (Core rows; the user rows are checked
from that read, the heads taken from it). When every stream
exists these are reads only, sent without a transaction (autocommit: no BEGIN and
COMMIT round trips); a stream to create makes it one transaction.

A batch that restores no stream (a connect without positions: most of a connect storm)
needs no ORM session: its two reads go on a plain connection of the engine, and on
PostgreSQL with psycopg as two `= ANY(array)` statements (one statement whatever the
batch's size) run by the driver's own cursor, without SQLAlchemy's execution and result
machinery: a batch read so costs about half the CPU of one through the session and Core
statements. A stream to create, a restore check or another database takes the session's
path, and so does a batch whose driver read failed (read again there: SQLAlchemy's
errors and its handling of a lost connection, as before).

Nothing is cached between reads: every connect's user row is read by a statement that
began after the connect arrived, so a deleted user or a changed role is refused exactly
as with one transaction per connect. Each connect's outcome is its own: a refusal
(HeraldError) goes to that connect only; if the shared transaction fails in another way,
each connect of the batch is read again in its own transaction, so that one bad request
cannot fail the others. Idle, a connect does not wait: the first read starts at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Engine, Integer, String, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import UNAVAILABLE
from app.core.errors import HeraldError
from app.outbox.replay import Head, read_head
from app.outbox.tables import Stream
from app.outbox.writer import ensure_stream
from app.portal import access
from app.portal.auth import Principal
from app.portal.models import User

log = logging.getLogger("herald.gateway")


@dataclass(frozen=True, slots=True)
class Loaded:
    """What one connect read: the user's name, the heads of its auto and restored streams."""

    name: str
    auto: dict[str, Head]
    restored: dict[str, Head]


@dataclass(slots=True)
class _Request:
    who: Principal
    auto: list[str]
    restorable: list[str]
    future: asyncio.Future[Loaded] = field(repr=False)


Readable = Callable[[Session, Principal, str], bool]


def load_one(session: Session, who: Principal, auto: Sequence[str], restorable: Sequence[str],
             readable: Readable, users: Mapping[int, Any] | None = None,
             heads: Mapping[str, Head] | None = None) -> Loaded:
    """One connect's reads (in `session`'s transaction); AuthError for a stale token.
    `users`: the user rows read already for a batch (by id), else the row is read here;
    `heads`: the streams' heads read already (by name), else each is read here."""
    if users is None or who.user_id is None:
        name = access.check_user_row(session, who)
    else:
        name = access.check_user(who, users.get(who.user_id))
    known = heads or {}

    def head(n: str) -> Head:
        got = known.get(n)
        return got if got is not None else read_head(session, n)

    return Loaded(name, {n: head(n) for n in auto},
                  {n: head(n) for n in restorable if readable(session, who, n)})


# The heads of many streams at once, as Core rows (no ORM object per stream).
_HEADS = select(Stream.name, Stream.head, Stream.epoch, Stream.pruned_through).where(
    Stream.name.in_(bindparam("names", expanding=True)))


def _read_heads(session: Session, names: set[str], restorable: set[str]) -> dict[str, Head]:
    """The heads of the streams of `names` that exist. Those of `restorable` are read as ORM
    objects, kept in `session`'s identity map: the restore check (`readable`) looks them up
    there without SQL; the others (the connects' own streams) as Core rows."""
    heads: dict[str, Head] = {}
    plain = names - restorable
    if plain:
        for name, head, epoch, pruned in session.connection().execute(
                _HEADS, {"names": sorted(plain)}):
            heads[name] = Head(name, int(head), epoch, int(pruned))
    if restorable:
        streams = list(session.scalars(select(Stream).where(Stream.name.in_(restorable))))
        # Held by the session: its identity map keeps only weak references.
        session.info.setdefault("streams", []).extend(streams)
        for s in streams:
            heads[s.name] = Head(s.name, int(s.head), s.epoch, int(s.pruned_through))
    return heads


# The same reads for PostgreSQL, one statement whatever the batch's size (an array
# parameter, not an expanded IN list), handed to the driver as compiled here.
_HEADS_ANY = select(Stream.name, Stream.head, Stream.epoch, Stream.pruned_through).where(
    Stream.name == any_(bindparam("names", type_=ARRAY(String))))
_USERS_ANY = select(User.id, User.role, User.name, User.email).where(
    User.id == any_(bindparam("uids", type_=ARRAY(Integer))))


class _UserRow(NamedTuple):
    id: int
    role: str
    name: str | None
    email: str


class _PlainReads:
    """A batch's two reads on a plain connection of `engine` (no ORM session): on
    PostgreSQL with psycopg, the statements above run by the driver's own cursor (no
    SQLAlchemy execution, bind or result processing); elsewhere the Core statements."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.sql: tuple[str, str] | None = None
        if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
            self.sql = (str(_HEADS_ANY.compile(dialect=engine.dialect)),
                        str(_USERS_ANY.compile(dialect=engine.dialect)))
        self.statements = 0  # run by the driver's cursor (tests, diagnostics)

    def read(self, names: set[str], ids: list[int]
             ) -> tuple[dict[str, Head], dict[int, Any]] | None:
        """The heads of `names` that exist and, if all do, the user rows of `ids`; None if
        the driver failed (the caller reads again through SQLAlchemy, whose errors and
        handling of a lost connection are the gateway's)."""
        with self.engine.connect() as conn:
            if self.sql is None:
                heads = _heads(conn.execute(_HEADS, {"names": sorted(names)}))
                if len(heads) < len(names):
                    return heads, {}
                return heads, {int(row.id): row
                               for row in conn.execute(access.USER_ROWS, {"uids": ids})}
            dbapi: Any = conn.connection.dbapi_connection
            try:
                with dbapi.cursor() as cursor:
                    self.statements += 1
                    cursor.execute(self.sql[0], {"names": sorted(names)})
                    heads = _heads(cursor)
                    if len(heads) < len(names):
                        return heads, {}
                    self.statements += 1
                    cursor.execute(self.sql[1], {"uids": ids})
                    return heads, {int(row[0]): _UserRow(*row) for row in cursor}
            except Exception as exc:
                if getattr(dbapi, "broken", False) or getattr(dbapi, "closed", False):
                    conn.invalidate(exc)  # not back to the pool
                log.info("plain connect read failed, read again error=%s",
                         type(exc).__name__)
                return None


def _heads(rows: Any) -> dict[str, Head]:
    return {name: Head(name, int(head), epoch, int(pruned)) for name, head, epoch, pruned in rows}


def _checked(batch: list[_Request], users: Mapping[int, Any],
             heads: Mapping[str, Head]) -> list[Loaded | BaseException]:
    """Each request's outcome from rows read already (`load_one` without a session: every
    request has a user id and restores nothing, every stream's head is in `heads`)."""
    outcomes: list[Loaded | BaseException] = []
    for r in batch:
        assert r.who.user_id is not None and not r.restorable
        try:
            name = access.check_user(r.who, users.get(r.who.user_id))
        except HeraldError as exc:
            outcomes.append(exc)
            continue
        outcomes.append(Loaded(name, {n: heads[n] for n in r.auto}, {}))
    return outcomes


class ConnectReader:
    """`await reader.load(who, auto, restorable)`: that connect's `Loaded`, read together
    with every other connect waiting at the time (at most `max_batch` per transaction,
    `parallel` transactions at once)."""

    def __init__(self, factory: sessionmaker[Session], readable: Readable, *,
                 max_batch: int = 200, parallel: int = 2) -> None:
        self.factory = factory
        self.readable = readable
        self.max_batch = max_batch
        self.parallel = parallel
        self._pending: list[_Request] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # transactions run (tests, metrics)
        self.loaded = 0  # connects served
        self.plain = 0  # batches read on a plain connection (tests)
        bind = factory.kw.get("bind")
        self._plain = _PlainReads(bind) if isinstance(bind, Engine) else None

    async def load(self, who: Principal, auto: list[str], restorable: list[str]) -> Loaded:
        future: asyncio.Future[Loaded] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(who, auto, restorable, future))
        if self._running < self.parallel:
            self._start()
        return await future

    def _start(self) -> None:
        batch = self._pending[:self.max_batch]
        del self._pending[:self.max_batch]
        self._running += 1
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Request]) -> None:
        self.batches += 1
        self.loaded += len(batch)
        try:
            try:
                outcomes = await asyncio.to_thread(self._read, batch)
            except BaseException as exc:
                if not isinstance(exc, Exception):  # cancelled (shutdown): so are they
                    for request in batch:
                        request.future.cancel()
                    raise
                if len(batch) == 1 or isinstance(exc, UNAVAILABLE):
                    outcomes = [exc] * len(batch)
                else:
                    log.warning("connect batch failed, reading each alone size=%d error=%s",
                                len(batch), type(exc).__name__)
                    outcomes = await asyncio.to_thread(self._read_each, batch)
            for request, outcome in zip(batch, outcomes, strict=True):
                if request.future.done():  # the connect was cancelled meanwhile
                    continue
                if isinstance(outcome, BaseException):
                    request.future.set_exception(outcome)
                else:
                    request.future.set_result(outcome)
        finally:
            self._running -= 1
            if self._pending:
                self._start()

    def _read(self, batch: list[_Request]) -> list[Loaded | BaseException]:
        """Every request of `batch` (worker thread): reads only, each statement on its own
        (autocommit: no BEGIN and COMMIT round trips; at READ COMMITTED each statement of a
        transaction sees no more); in one transaction when a stream is missing (created)."""
        ids = sorted({r.who.user_id for r in batch if r.who.user_id is not None})
        auto = {n for r in batch for n in r.auto}
        restorable = {n for r in batch for n in r.restorable}
        names = auto | restorable
        plain = self._plain
        if (plain is not None and not restorable
                and all(r.who.user_id is not None for r in batch)):
            got = plain.read(names, ids)  # reads only: no ORM session
            if got is not None and len(got[0]) == len(names):
                self.plain += 1
                return _checked(batch, got[1], got[0])
        with self.factory() as session:
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            heads = _read_heads(session, names, restorable)
            if len(heads) == len(names):  # every stream exists: nothing is written
                return self._outcomes(session, batch, ids, heads)
        with self.factory() as session, session.begin():
            heads = _read_heads(session, names, restorable)
            # Streams every connect reads (its user's, its role's) that do not exist yet:
            # created in name order, so that two batches never wait on each other in a cycle.
            missing = sorted(auto - set(heads))
            for name in missing:
                ensure_stream(session, name)
            if missing:
                heads.update(_read_heads(session, set(missing), restorable & set(missing)))
            return self._outcomes(session, batch, ids, heads)

    def _outcomes(self, session: Session, batch: list[_Request], ids: list[int],
                  heads: dict[str, Head]) -> list[Loaded | BaseException]:
        """Each request's outcome, its user row from one query for the batch (Core rows:
        no ORM object per user), the streams' heads from `heads`."""
        conn = session.connection()
        users = ({int(row.id): row for row in conn.execute(access.USER_ROWS, {"uids": ids})}
                 if ids else {})
        outcomes: list[Loaded | BaseException] = []
        for r in batch:
            try:
                outcomes.append(load_one(session, r.who, r.auto, r.restorable,
                                         self.readable, users, heads))
            except HeraldError as exc:
                outcomes.append(exc)
        return outcomes

    def _read_each(self, batch: list[_Request]) -> list[Loaded | BaseException]:
        """Each request in its own transaction (after a batch failed)."""
        outcomes: list[Loaded | BaseException] = []
        for r in batch:
            try:
                with self.factory() as session, session.begin():
                    outcomes.append(load_one(session, r.who, r.auto, r.restorable,
                                             self.readable))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


__all__ = ["ConnectReader", "Loaded", "load_one"]
