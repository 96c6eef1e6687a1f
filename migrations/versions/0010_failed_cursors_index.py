"""the failed streams in order of failure: an index of the failed cursors only

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 19:10:00

`ix_relay_cursors_failed` ((failed_at, stream) WHERE state = 'failed'): the outbox
status, the failed list and the console read the longest-failed streams first, a page of
them, instead of looking up every failed stream (70,000 failed streams, as a Redis that
refuses every channel leaves them, made the status take a second). It holds the failed
cursors only: a cursor's advance never changes `state` or `failed_at`, so it stays a HOT
update, and a cursor enters the index only when its stream fails.

On PostgreSQL the index is built (and dropped on downgrade) CONCURRENTLY, outside the
migration's transaction: the relay never waits on `relay_cursors` while it is built.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = 'ix_relay_cursors_failed'
FAILED = sa.text("state = 'failed'")


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            op.create_index(INDEX, 'relay_cursors', ['failed_at', 'stream'], unique=False,
                            postgresql_where=FAILED, postgresql_concurrently=True,
                            if_not_exists=True)
    else:
        op.create_index(INDEX, 'relay_cursors', ['failed_at', 'stream'], unique=False,
                        sqlite_where=FAILED)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            op.drop_index(INDEX, table_name='relay_cursors', postgresql_concurrently=True,
                          if_exists=True)
    else:
        op.drop_index(INDEX, table_name='relay_cursors')
