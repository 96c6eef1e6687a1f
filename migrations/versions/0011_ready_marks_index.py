"""the marks a claim may take, and the waiting ones by when: two partial indexes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 23:00:00

`ix_pending_streams_ready` ((name) WHERE not_before IS NULL) holds the marks of the
streams a claim may take now; `ix_pending_streams_waiting` ((not_before) WHERE
not_before IS NOT NULL) the marks of streams on a backoff or failed, by the end of their
wait. The relay's claim walks the first in name order and looks up in the second the
waits that ended, so it reads no mark of a stream that still waits: 100,000 failed
streams made each idle claim walk all their marks (an idle relay() took 18 ms; 1.5 ms with
the indexes).
A writer's update of its mark changes neither column (still a HOT update); a mark enters
the waiting index when the relay refuses its stream, and leaves it on a retry.

On PostgreSQL they are built (and dropped on downgrade) CONCURRENTLY, outside the
migration's transaction: writers never wait on `pending_streams` while they are built.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (('ix_pending_streams_ready', ['name'], sa.text('not_before IS NULL')),
           ('ix_pending_streams_waiting', ['not_before'], sa.text('not_before IS NOT NULL')))


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            for name, columns, where in INDEXES:
                op.create_index(name, 'pending_streams', columns, unique=False,
                                postgresql_where=where, postgresql_concurrently=True,
                                if_not_exists=True)
    else:
        for name, columns, where in INDEXES:
            op.create_index(name, 'pending_streams', columns, unique=False,
                            sqlite_where=where)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            for name, _columns, _where in INDEXES:
                op.drop_index(name, table_name='pending_streams',
                              postgresql_concurrently=True, if_exists=True)
    else:
        for name, _columns, _where in INDEXES:
            op.drop_index(name, table_name='pending_streams')
