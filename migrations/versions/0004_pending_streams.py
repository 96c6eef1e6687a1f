"""pending streams: the relay's work list (issue 16)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 18:30:00

`streams.pending` is set by the writer's head bump and cleared by the relay once its
cursor reached the head; a partial index holds only the pending streams. The upgrade
marks every stream whose cursor is behind its head (failed and retrying ones included),
so nothing written before the upgrade is forgotten.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, no batch mode: on SQLite a batch would copy `streams` into a new
# table, and dropping the old one cascades (ON DELETE CASCADE) to cursors and events.
def upgrade() -> None:
    op.add_column('streams', sa.Column('pending', sa.Boolean(), nullable=False,
                                       server_default=sa.false()))
    op.execute(
        "UPDATE streams SET pending = true WHERE head > COALESCE("
        "(SELECT c.dispatched FROM relay_cursors AS c WHERE c.stream = streams.name), 0)")
    op.create_index('ix_streams_pending', 'streams', ['name'], unique=False,
                    postgresql_where=sa.text('pending'), sqlite_where=sa.text('pending'))


def downgrade() -> None:
    op.drop_index('ix_streams_pending', table_name='streams')
    op.execute("ALTER TABLE streams DROP COLUMN pending")
