"""Alembic: upgrade from empty to head and downgrade back to base, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from app.core.migrate import downgrade, upgrade
from testkit.databases import create_pg_database, drop_pg_database, require_pg

TABLES = {"users", "projects", "project_technicians", "tickets", "messages", "documents",
          "interventions", "quotes", "streams", "relay_cursors", "events", "idempotency_keys"}


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind: a SQLite file, or a PostgreSQL database of this run
    (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    with a_pg_database("_mig") as pg_url:
        yield pg_url


@contextlib.contextmanager
def engine_at(url: str, revision: str = "head") -> Iterator[Engine]:
    """The database of `url` migrated up to `revision`, and an engine on it (disposed after)."""
    upgrade(url, revision)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


@contextlib.contextmanager
def a_pg_database(suffix: str) -> Iterator[str]:
    """An empty PostgreSQL database of this run, dropped after."""
    require_pg()
    url = create_pg_database(suffix)
    try:
        yield url
    finally:
        drop_pg_database(url)


def test_upgrades_from_empty_and_downgrades_to_base(url: str) -> None:
    with engine_at(url) as engine:
        tables = set(inspect(engine).get_table_names())
        assert tables >= TABLES
        uniques = inspect(engine).get_unique_constraints("events")
        assert any(set(u["column_names"]) == {"stream", "offset"} for u in uniques)
        downgrade(url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(url)  # and up again
        assert set(inspect(engine).get_table_names()) >= TABLES


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    from app.core.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
    finally:
        engine.dispose()


def test_0004_marks_the_streams_behind_and_downgrades(url: str) -> None:
    """0004 marks pending exactly the streams whose cursor is behind (failed ones too),
    and its downgrade drops the mark and its index."""
    with engine_at(url, "0003") as engine:
        with engine.begin() as conn:
            for name, head, done, state in (("user-1", 3, 3, "active"), ("user-2", 5, 2, "active"),
                                            ("user-3", 1, 0, "failed"), ("user-4", 0, 0, "active")):
                conn.execute(text("INSERT INTO streams (name, epoch, head, pruned_through, "
                                  "created_at) VALUES (:n, 'e', :h, 0, CURRENT_TIMESTAMP)"),
                             {"n": name, "h": head})
                conn.execute(text("INSERT INTO relay_cursors (stream, dispatched, state, "
                                  "attempts) VALUES (:n, :d, :s, 0)"),
                             {"n": name, "d": done, "s": state})
        upgrade(url, "0004")
        with engine.connect() as conn:
            marked = {name for name, pending in conn.execute(
                text("SELECT name, pending FROM streams")) if pending}
        assert marked == {"user-2", "user-3"}
        indexes = inspect(engine).get_indexes("streams")
        assert any(i["name"] == "ix_streams_pending" for i in indexes)
        downgrade(url, "0003")
        assert "pending" not in {c["name"] for c in inspect(engine).get_columns("streams")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM streams")).scalar() == 4
            assert conn.execute(text("SELECT count(*) FROM relay_cursors")).scalar() == 4


def test_0005_counts_what_is_there_and_downgrades(url: str) -> None:
    """0005 counts what is there (heads, cursors, marks, failed, retrying) and gives each
    pending stream its first pending event's time; later changes are counted by its
    triggers; its downgrade drops the counts and the column."""
    with engine_at(url, "0004") as engine:
        with engine.begin() as conn:
            for name, head, done, state, attempts, pending in (
                    ("user-1", 3, 3, "active", 0, False), ("user-2", 5, 2, "active", 2, True),
                    ("user-3", 1, 0, "failed", 8, True)):
                conn.execute(text("INSERT INTO streams (name, epoch, head, pruned_through, "
                                  "pending, created_at) VALUES (:n, 'e', :h, 0, :p, "
                                  "CURRENT_TIMESTAMP)"), {"n": name, "h": head, "p": pending})
                conn.execute(text("INSERT INTO relay_cursors (stream, dispatched, state, "
                                  "attempts) VALUES (:n, :d, :s, :a)"),
                             {"n": name, "d": done, "s": state, "a": attempts})
                for offset in range(done + 1, head + 1):
                    conn.execute(text('INSERT INTO events (id, stream, "offset", type, payload, '
                                      "created_at) VALUES (:i, :n, :o, 't', '{}', :at)"),
                                 {"i": f"{name}-{offset}", "n": name, "o": offset,
                                  "at": f"2026-01-0{offset} 00:00:00"})
        upgrade(url, "0005")
        with engine.begin() as conn:
            sums = conn.execute(text("SELECT sum(appended), sum(dispatched), sum(marked), "
                                     "sum(failed), sum(retrying) FROM outbox_counts")).one()
            assert tuple(sums) == (9, 5, 2, 1, 1)
            since = dict(conn.execute(text("SELECT name, pending_since FROM streams "
                                           "WHERE pending")).all())
            assert {n: str(v)[:10] for n, v in since.items()} == {
                "user-2": "2026-01-03", "user-3": "2026-01-01"}
            conn.execute(text("UPDATE streams SET head = head + 4 WHERE name = 'user-1'"))
            conn.execute(text("UPDATE relay_cursors SET dispatched = 3, state = 'active', "
                              "attempts = 0 WHERE stream = 'user-2'"))
            sums = conn.execute(text("SELECT sum(appended), sum(dispatched), sum(marked), "
                                     "sum(failed), sum(retrying) FROM outbox_counts")).one()
            assert tuple(sums) == (13, 6, 2, 1, 0)
        downgrade(url, "0004")
        assert "outbox_counts" not in inspect(engine).get_table_names()
        assert "pending_since" not in {c["name"] for c in inspect(engine).get_columns("streams")}
        with engine.begin() as conn:  # no trigger left behind
            conn.execute(text("UPDATE streams SET head = head + 1"))


def test_0007_drops_the_partial_stream_offset_index_and_downgrades(url: str) -> None:
    """0007 drops the inbox's partial copy of (stream, offset); a downgrade brings it back."""
    def indexes(engine: Engine) -> set[str]:
        return {str(i["name"]) for i in inspect(engine).get_indexes("events")}

    with engine_at(url, "0006") as engine:
        assert {"ix_events_notification_offset", "ix_events_notification_created"} \
            <= indexes(engine)
        upgrade(url)
        assert "ix_events_notification_offset" not in indexes(engine)
        assert "ix_events_notification_created" in indexes(engine)
        downgrade(url, "0006")
        assert "ix_events_notification_offset" in indexes(engine)
        upgrade(url)
        assert "ix_events_notification_offset" not in indexes(engine)


SUMS = "SELECT sum(appended), sum(dispatched), sum(marked), sum(failed), sum(retrying) " \
    "FROM outbox_counts"


def test_0008_moves_the_marks_into_their_own_table_and_downgrades(url: str) -> None:
    """0008 moves the marks and their `pending_since` into `pending_streams` (with each
    stream's head and epoch) and drops the columns; the counts stay, marks made or
    deleted afterwards are counted, a deleted stream's mark goes with it; its downgrade
    puts the marks back in the columns, counted by 0005's triggers again."""
    with engine_at(url, "0007") as engine:
        with engine.begin() as conn:
            for name, head, done, pending, since in (
                    ("user-1", 3, 3, False, None), ("user-2", 5, 2, True, "2026-01-03"),
                    ("user-3", 1, 0, True, None)):
                conn.execute(text("INSERT INTO streams (name, epoch, head, pruned_through, "
                                  "pending, pending_since, created_at) VALUES (:n, :e, :h, 0, "
                                  ":p, :s, CURRENT_TIMESTAMP)"),
                             {"n": name, "e": f"e-{name}", "h": head, "p": pending, "s": since})
                conn.execute(text("INSERT INTO relay_cursors (stream, dispatched, state, "
                                  "attempts) VALUES (:n, :d, 'active', 0)"),
                             {"n": name, "d": done})
            before = tuple(conn.execute(text(SUMS)).one())
        assert before == (9, 5, 2, 0, 0)
        upgrade(url, "0008")
        columns = {c["name"] for c in inspect(engine).get_columns("streams")}
        assert not {"pending", "pending_since"} & columns
        with engine.begin() as conn:
            marks = {name: (int(head), epoch, since and str(since)[:10]) for name, head, epoch,
                     since in conn.execute(text("SELECT name, head, epoch, since "
                                                "FROM pending_streams"))}
            assert marks == {"user-2": (5, "e-user-2", "2026-01-03"),
                             "user-3": (1, "e-user-3", None)}
            assert tuple(conn.execute(text(SUMS)).one()) == before
            conn.execute(text("INSERT INTO pending_streams (name, head, epoch) "
                              "VALUES ('user-1', 4, 'e-user-1')"))
            conn.execute(text("UPDATE streams SET head = 4 WHERE name = 'user-1'"))
            conn.execute(text("DELETE FROM relay_cursors WHERE stream = 'user-3'"))
            conn.execute(text("DELETE FROM streams WHERE name = 'user-3'"))  # and its mark
            assert conn.execute(text("SELECT count(*) FROM pending_streams "
                                     "WHERE name = 'user-3'")).scalar() == 0
            assert tuple(conn.execute(text(SUMS)).one()) == (9, 5, 2, 0, 0)
        downgrade(url, "0007")
        assert "pending_streams" not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            rows = conn.execute(text("SELECT name, pending, pending_since FROM streams"))
            assert {name: (bool(p), since and str(since)[:10]) for name, p, since in rows} == {
                "user-1": (True, None), "user-2": (True, "2026-01-03")}
            assert tuple(conn.execute(text(SUMS)).one()) == (9, 5, 2, 0, 0)
            conn.execute(text("UPDATE streams SET pending = false WHERE name = 'user-1'"))
            assert tuple(conn.execute(text(SUMS)).one()) == (9, 5, 1, 0, 0)
        upgrade(url)


def test_0009_says_until_when_each_marked_stream_waits_and_downgrades(url: str) -> None:
    """0009 gives each mark `not_before`: for a failed stream the year 9999, for one
    waiting on a backoff the end of it, else none; its downgrade drops the column."""
    with engine_at(url, "0008") as engine:
        with engine.begin() as conn:
            for name, state, attempts, at in (("user-1", "failed", 8, None),
                                              ("user-2", "active", 1, "2030-01-02 03:04:05"),
                                              ("user-3", "active", 0, None),
                                              ("user-4", "failed", 8, None)):
                conn.execute(text("INSERT INTO streams (name, epoch, head, pruned_through, "
                                  "created_at) VALUES (:n, :e, 2, 0, CURRENT_TIMESTAMP)"),
                             {"n": name, "e": f"e-{name}"})
                conn.execute(text("INSERT INTO relay_cursors (stream, dispatched, state, "
                                  "attempts, next_attempt_at) VALUES (:n, 0, :s, :a, :t)"),
                             {"n": name, "s": state, "a": attempts, "t": at})
                if name != "user-4":  # a failed stream without a mark gets none
                    conn.execute(text("INSERT INTO pending_streams (name, head, epoch) "
                                      "VALUES (:n, 2, :e)"), {"n": name, "e": f"e-{name}"})
        upgrade(url, "0009")
        with engine.begin() as conn:
            marks = {name: at and str(at)[:19] for name, at in conn.execute(text(
                "SELECT name, not_before FROM pending_streams"))}
        assert marks == {"user-1": "9999-12-31 00:00:00", "user-2": "2030-01-02 03:04:05",
                         "user-3": None}
        downgrade(url, "0008")
        assert "not_before" not in {c["name"] for c in inspect(engine).get_columns(
            "pending_streams")}
        upgrade(url)


def test_0010_indexes_the_failed_cursors_and_downgrades(url: str) -> None:
    """0010 indexes the failed cursors (longest failed first); its downgrade drops it."""
    with engine_at(url) as engine:
        def names() -> set[str]:
            return {i["name"] for i in inspect(engine).get_indexes("relay_cursors")}

        assert "ix_relay_cursors_failed" in names()
        downgrade(url, "0009")
        assert "ix_relay_cursors_failed" not in names()
        upgrade(url)
        assert "ix_relay_cursors_failed" in names()


def test_0011_indexes_the_ready_and_the_waiting_marks_and_downgrades(url: str) -> None:
    """0011 indexes the marks a claim may take and the waiting ones; its downgrade drops
    both."""
    added = {"ix_pending_streams_ready", "ix_pending_streams_waiting"}
    with engine_at(url) as engine:
        def names() -> set[str]:
            return {i["name"] for i in inspect(engine).get_indexes("pending_streams")}

        assert added <= names()
        downgrade(url, "0010")
        assert not added & names()
        upgrade(url)
        assert added <= names()
