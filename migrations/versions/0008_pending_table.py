"""the pending mark in a table of its own: HOT head bumps, a clear off the streams table

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 06:30:00

`streams.pending` and `streams.pending_since` (0004, 0005) become the rows of
`pending_streams`: a row per stream with events the relay may not have sent, holding the
head its last writer set, the stream's epoch and `since` (the former `pending_since`).
`pending` was in two partial indexes' predicates, so every head bump that marked a stream
and every clear was a new version of a `streams` row with new entries in its indexes (at
a million streams a random index leaf each). Now the head bump is a HOT update of
`streams` (no index holds `head`), a writer adds or updates a row of a small table, and
the relay's clear deletes from that small table.

The counting triggers follow: `marked` is counted from inserts into and deletes from
`pending_streams`; the `streams` triggers count heads only. A deleted stream's mark is
deleted by a trigger, not a foreign key (whose check of every mark a writer adds cost a
tenth of a batch's statement).

The upgrade locks `streams` and `relay_cursors` against writes, copies the marks (failed
and retrying streams stay marked), and drops the columns: code from before this revision
fails on the missing column instead of marking streams nobody reads. The downgrade puts
the marks back in the columns.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = "appended, dispatched, marked, failed, retrying"

# PostgreSQL: statement triggers over transition tables, as in 0005.
PG_MARKS = """
CREATE FUNCTION herald_count_pending_streams() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE m bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT count(*) INTO m FROM new_rows;
  ELSE
    SELECT -count(*) INTO m FROM old_rows;
  END IF;
  IF m <> 0 THEN
    INSERT INTO outbox_counts (appended, dispatched, marked, failed, retrying)
    VALUES (0, 0, m, 0, 0);
  END IF;
  RETURN NULL;
END $$"""


# `herald_count_streams()` for heads only: an update's delta is a difference of two sums,
# no join of the transition tables.
PG_HEADS = """
CREATE OR REPLACE FUNCTION herald_count_streams() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE a bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT coalesce(sum(head), 0) INTO a FROM new_rows;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT -coalesce(sum(head), 0) INTO a FROM old_rows;
  ELSE
    SELECT (SELECT coalesce(sum(head), 0) FROM new_rows)
           - (SELECT coalesce(sum(head), 0) FROM old_rows) INTO a;
  END IF;
  IF a <> 0 THEN
    INSERT INTO outbox_counts (appended, dispatched, marked, failed, retrying)
    VALUES (a, 0, 0, 0, 0);
  END IF;
  RETURN NULL;
END $$"""

# A deleted stream's mark goes with it (no foreign key: its check on every mark a writer
# adds cost 16-23 ms of a batch of 1,000 streams; Herald itself never deletes a stream).
PG_FORGET = """
CREATE FUNCTION herald_forget_marks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM pending_streams WHERE name IN (SELECT name FROM old_rows);
  RETURN NULL;
END $$"""
SQLITE_FORGET = ("CREATE TRIGGER herald_forget_marks AFTER DELETE ON streams "
                 "BEGIN DELETE FROM pending_streams WHERE name = OLD.name; END")


# SQLite: the `streams` row triggers count heads only.
SQLITE_HEADS = [
    "CREATE TRIGGER herald_count_streams_ins AFTER INSERT ON streams "
    f"BEGIN INSERT INTO outbox_counts ({COLUMNS}) VALUES (NEW.head, 0, 0, 0, 0); END",
    "CREATE TRIGGER herald_count_streams_upd AFTER UPDATE ON streams "
    "WHEN (NEW.head) IS NOT (OLD.head) "
    f"BEGIN INSERT INTO outbox_counts ({COLUMNS}) "
    "VALUES ((NEW.head) - (OLD.head), 0, 0, 0, 0); END",
    "CREATE TRIGGER herald_count_streams_del AFTER DELETE ON streams "
    f"BEGIN INSERT INTO outbox_counts ({COLUMNS}) VALUES (-(OLD.head), 0, 0, 0, 0); END",
]


def _revision_0005() -> ModuleType:
    """Migration 0005's module: its `streams` counting (with the `pending` column) is what
    the downgrade puts back."""
    path = Path(__file__).with_name("0005_outbox_counts.py")
    spec = importlib.util.spec_from_file_location("herald_migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SQLITE_MARKS = [
    "CREATE TRIGGER herald_count_pending_streams_ins AFTER INSERT ON pending_streams "
    f"BEGIN INSERT INTO outbox_counts ({COLUMNS}) VALUES (0, 0, 1, 0, 0); END",
    "CREATE TRIGGER herald_count_pending_streams_del AFTER DELETE ON pending_streams "
    f"BEGIN INSERT INTO outbox_counts ({COLUMNS}) VALUES (0, 0, -1, 0, 0); END",
]


def _lock(postgres: bool) -> None:
    if postgres:  # no write may slip between the copy and the triggers
        op.execute("LOCK TABLE streams, relay_cursors IN SHARE ROW EXCLUSIVE MODE")


def _drop_streams_triggers(postgres: bool) -> None:
    if not postgres:
        for event in ("ins", "upd", "del"):
            op.execute(f"DROP TRIGGER herald_count_streams_{event}")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    _lock(postgres)
    op.create_table(
        'pending_streams',
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('head', sa.BigInteger(), nullable=False),
        sa.Column('epoch', sa.String(length=32), nullable=False),
        sa.Column('since', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('name', name='pk_pending_streams'),
        postgresql_with={'fillfactor': 80},
    )
    op.create_index('ix_pending_streams_since', 'pending_streams', ['since', 'name'])
    op.execute("INSERT INTO pending_streams (name, head, epoch, since) "
               "SELECT name, head, epoch, pending_since FROM streams WHERE pending")
    # `marked` already counts these rows: the triggers come after the copy.
    _drop_streams_triggers(postgres)
    if postgres:
        op.execute(PG_HEADS)
        op.execute(PG_MARKS)
        for event, refs in (("INSERT", "NEW TABLE AS new_rows"),
                            ("DELETE", "OLD TABLE AS old_rows")):
            op.execute(f"CREATE TRIGGER herald_count_pending_streams_{event.lower()[:3]} "
                       f"AFTER {event} ON pending_streams REFERENCING {refs} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION herald_count_pending_streams()")
        op.execute(PG_FORGET)
        op.execute("CREATE TRIGGER herald_forget_marks AFTER DELETE ON streams "
                   "REFERENCING OLD TABLE AS old_rows "
                   "FOR EACH STATEMENT EXECUTE FUNCTION herald_forget_marks()")
    else:
        for statement in SQLITE_HEADS + SQLITE_MARKS:
            op.execute(statement)
        op.execute(SQLITE_FORGET)
    op.drop_index('ix_streams_pending_since', table_name='streams')
    op.drop_index('ix_streams_pending', table_name='streams')
    # Plain ALTER TABLE, no batch mode: a batch copy of `streams` would cascade deletes.
    op.execute("ALTER TABLE streams DROP COLUMN pending_since")
    op.execute("ALTER TABLE streams DROP COLUMN pending")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    _lock(postgres)
    for event in ("ins", "del"):
        op.execute(f"DROP TRIGGER herald_count_pending_streams_{event}"
                   + (" ON pending_streams" if postgres else ""))
    op.execute("DROP TRIGGER herald_forget_marks" + (" ON streams" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION herald_count_pending_streams()")
        op.execute("DROP FUNCTION herald_forget_marks()")
    op.add_column('streams', sa.Column('pending', sa.Boolean(), nullable=False,
                                       server_default=sa.false()))
    op.add_column('streams', sa.Column('pending_since', sa.DateTime(timezone=True),
                                       nullable=True))
    # Counted as heads only (the marks are counted already), then 0005's triggers again.
    op.execute("UPDATE streams SET pending = true, pending_since = (SELECT p.since FROM "
               "pending_streams AS p WHERE p.name = streams.name) "
               "WHERE name IN (SELECT name FROM pending_streams)")
    _drop_streams_triggers(postgres)
    before = _revision_0005()
    if postgres:
        op.execute(before.PG_FUNCTIONS["streams"].replace(
            "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    else:
        for statement in before._sqlite_triggers("streams"):
            op.execute(statement)
    op.create_index('ix_streams_pending', 'streams', ['name'], unique=False,
                    postgresql_where=sa.text('pending'), sqlite_where=sa.text('pending'))
    op.execute("CREATE INDEX ix_streams_pending_since ON streams (pending_since, name) "
               "WHERE pending")
    op.drop_index('ix_pending_streams_since', table_name='pending_streams')
    op.drop_table('pending_streams')
