"""outbox counts and pending-since: the outbox status at the cost of what is pending (issue 16)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 22:00:00

`outbox_counts` holds the outbox's totals as rows of deltas whose sums are the totals:
events appended (the sum of heads), events dispatched (the sum of cursors), streams
marked pending, failed streams, retrying streams. Triggers on `streams` and
`relay_cursors` add a delta row in the same transaction as every change, whoever makes
it (writers, the relay, retries, migrations, an operator's SQL): on PostgreSQL one row
per statement (statement triggers over transition tables, so concurrent writers only
ever insert, never wait on a counter row), on SQLite one row per changed row.
`app.outbox.counts` folds the rows into one now and then.

`streams.pending_since`: when the stream was last marked pending (the writer's timestamp
of the events that marked it), a lower bound of its first pending event's time that the
outbox status walks in order (a partial index of the pending streams).

The upgrade backfills both from a full recount; nothing written before it is lost.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("appended", "dispatched", "marked", "failed", "retrying")

# PostgreSQL: one function per table, called once per statement with its transition tables.
PG_FUNCTIONS = {
    "streams": """
CREATE FUNCTION herald_count_streams() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE a bigint; m bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT coalesce(sum(head), 0), count(*) FILTER (WHERE pending) INTO a, m FROM new_rows;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT -coalesce(sum(head), 0), -count(*) FILTER (WHERE pending) INTO a, m FROM old_rows;
  ELSE
    SELECT coalesce(sum(n.head - o.head), 0),
           coalesce(sum(n.pending::int - o.pending::int), 0) INTO a, m
    FROM new_rows AS n JOIN old_rows AS o ON o.name = n.name;
  END IF;
  IF a <> 0 OR m <> 0 THEN
    INSERT INTO outbox_counts (appended, dispatched, marked, failed, retrying)
    VALUES (a, 0, m, 0, 0);
  END IF;
  RETURN NULL;
END $$""",
    "relay_cursors": """
CREATE FUNCTION herald_count_relay_cursors() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE d bigint; f bigint; r bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT coalesce(sum(dispatched), 0), count(*) FILTER (WHERE state = 'failed'),
           count(*) FILTER (WHERE state = 'active' AND attempts > 0) INTO d, f, r
    FROM new_rows;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT -coalesce(sum(dispatched), 0), -count(*) FILTER (WHERE state = 'failed'),
           -count(*) FILTER (WHERE state = 'active' AND attempts > 0) INTO d, f, r
    FROM old_rows;
  ELSE
    SELECT coalesce(sum(n.dispatched - o.dispatched), 0),
           coalesce(sum((n.state = 'failed')::int - (o.state = 'failed')::int), 0),
           coalesce(sum((n.state = 'active' AND n.attempts > 0)::int
                        - (o.state = 'active' AND o.attempts > 0)::int), 0) INTO d, f, r
    FROM new_rows AS n JOIN old_rows AS o ON o.stream = n.stream;
  END IF;
  IF d <> 0 OR f <> 0 OR r <> 0 THEN
    INSERT INTO outbox_counts (appended, dispatched, marked, failed, retrying)
    VALUES (0, d, 0, f, r);
  END IF;
  RETURN NULL;
END $$""",
}

# SQLite: row triggers, a delta row per changed row (its writers are serialised anyway).
SQLITE_DELTAS = {
    "streams": ("{r}.head", "0", "{r}.pending", "0", "0"),
    "relay_cursors": ("0", "{r}.dispatched", "0", "({r}.state = 'failed')",
                      "({r}.state = 'active' AND {r}.attempts > 0)"),
}


def _sqlite_triggers(table: str) -> list[str]:
    deltas = SQLITE_DELTAS[table]
    new = [d.format(r="NEW") for d in deltas]
    old = [d.format(r="OLD") for d in deltas]

    def add(values: list[str]) -> str:
        return (f"INSERT INTO outbox_counts ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join(values)});")

    changed = " OR ".join(f"({n}) IS NOT ({o})" for n, o in zip(new, old, strict=True)
                          if n != o)
    return [
        f"CREATE TRIGGER herald_count_{table}_ins AFTER INSERT ON {table} "
        f"BEGIN {add(new)} END",
        f"CREATE TRIGGER herald_count_{table}_upd AFTER UPDATE ON {table} WHEN {changed} "
        f"BEGIN {add([f'({n}) - ({o})' for n, o in zip(new, old, strict=True)])} END",
        f"CREATE TRIGGER herald_count_{table}_del AFTER DELETE ON {table} "
        f"BEGIN {add([f'-({o})' for o in old])} END",
    ]


BACKFILL = """
INSERT INTO outbox_counts (id, appended, dispatched, marked, failed, retrying)
SELECT 1,
  (SELECT coalesce(sum(head), 0) FROM streams),
  (SELECT coalesce(sum(dispatched), 0) FROM relay_cursors),
  (SELECT count(*) FROM streams WHERE pending),
  (SELECT count(*) FROM relay_cursors WHERE state = 'failed'),
  (SELECT count(*) FROM relay_cursors WHERE state = 'active' AND attempts > 0)
"""

PENDING_SINCE = """
UPDATE streams SET pending_since = (
  SELECT e.created_at FROM relay_cursors AS c JOIN events AS e
    ON e.stream = c.stream AND e."offset" = c.dispatched + 1
  WHERE c.stream = streams.name)
WHERE pending
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    op.create_table(
        'outbox_counts',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  primary_key=True, autoincrement=True),
        *[sa.Column(c, sa.BigInteger(), nullable=False, server_default='0') for c in COLUMNS],
    )
    # Plain ALTER TABLE (see 0004): a batch copy of `streams` would cascade deletes.
    op.add_column('streams', sa.Column('pending_since', sa.DateTime(timezone=True),
                                       nullable=True))
    if postgres:  # no write may slip between the recount and the triggers
        op.execute("LOCK TABLE streams, relay_cursors IN SHARE ROW EXCLUSIVE MODE")
    op.execute(PENDING_SINCE)
    op.execute(BACKFILL)
    if postgres:
        op.execute("SELECT setval(pg_get_serial_sequence('outbox_counts', 'id'), 1)")
        for table, function in PG_FUNCTIONS.items():
            op.execute(function)
            for event, refs in (("INSERT", "NEW TABLE AS new_rows"),
                                ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                                ("DELETE", "OLD TABLE AS old_rows")):
                op.execute(f"CREATE TRIGGER herald_count_{table}_{event.lower()[:3]} "
                           f"AFTER {event} ON {table} REFERENCING {refs} "
                           f"FOR EACH STATEMENT EXECUTE FUNCTION herald_count_{table}()")
        op.execute("CREATE INDEX ix_streams_pending_since ON streams "
                   "(pending_since, name) WHERE pending")
    else:
        for table in SQLITE_DELTAS:
            for statement in _sqlite_triggers(table):
                op.execute(statement)
        op.execute("CREATE INDEX ix_streams_pending_since ON streams (pending_since, name) "
                   "WHERE pending")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    for table in ("streams", "relay_cursors"):
        for event in ("ins", "upd", "del"):
            op.execute(f"DROP TRIGGER IF EXISTS herald_count_{table}_{event}"
                       + (f" ON {table}" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS herald_count_{table}()")
    op.drop_index('ix_streams_pending_since', table_name='streams')
    op.execute("ALTER TABLE streams DROP COLUMN pending_since")
    op.drop_table('outbox_counts')
