"""a mark says until when its stream waits: the claim passes waiting streams by

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 16:40:00

`pending_streams.not_before`: NULL while the stream may be claimed; the time its backoff
ends while it waits for a retry after a refused publish; FAILED_NOT_BEFORE (the year
9999) once it failed, until an operator retries it. The claim filters on it before it
looks up a mark's cursor: a stream that waits used to cost every claim a lookup of its
cursor (10,000 streams waiting on a backoff: an idle claim of 45 ms instead of 1.5; 2.9
ms now).
The cursor stays the authority (the claim checks its state and `next_attempt_at` as
before), so a mark whose `not_before` is NULL, or past, is only a lookup more.

The upgrade adds the column (no rewrite: no default) and sets it for the marks of
streams failed or waiting now; the downgrade drops it (ALTER TABLE … DROP COLUMN: on
SQLite 3.35 or later).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.outbox.tables.FAILED_NOT_BEFORE, as each database's datetimes are written
FAILED = {"postgresql": "'9999-12-31 00:00:00+00'", "sqlite": "'9999-12-31 00:00:00.000000'"}


def upgrade() -> None:
    # A plain ALTER TABLE on SQLite too (a batch copy of the table would trip on the
    # trigger of `streams` that names it).
    op.add_column('pending_streams',
                  sa.Column('not_before', sa.DateTime(timezone=True), nullable=True))
    failed = FAILED[op.get_bind().dialect.name]
    op.execute(
        "UPDATE pending_streams SET not_before = (SELECT CASE WHEN c.state = 'failed' "
        f"THEN {failed} ELSE c.next_attempt_at END FROM relay_cursors AS c "
        "WHERE c.stream = pending_streams.name) "
        "WHERE name IN (SELECT stream FROM relay_cursors "
        "WHERE state = 'failed' OR next_attempt_at IS NOT NULL)")


def downgrade() -> None:
    op.execute("ALTER TABLE pending_streams DROP COLUMN not_before")  # SQLite >= 3.35 too
