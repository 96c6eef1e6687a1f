"""inbox: per-user watermarks and item state; notification indexes on events

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-06 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTIFICATIONS = sa.text("type = 'notification'")


def upgrade() -> None:
    # On PostgreSQL the events table may be large and busy: build its two (partial, small)
    # indexes CONCURRENTLY, outside the migration's transaction, so writers never wait.
    # First: if a build fails, nothing else was done (drop the invalid index, run again).
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            _event_indexes(postgresql_concurrently=True)
    else:
        _event_indexes()

    op.create_table('inbox_cursors',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('stream', sa.String(length=100), nullable=False),
    sa.Column('read_through', sa.BigInteger(), nullable=False),
    sa.Column('seen_through', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_inbox_cursors_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'stream', name=op.f('pk_inbox_cursors'))
    )
    op.create_table('inbox_items',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('stream', sa.String(length=100), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('read', sa.Boolean(), nullable=True),
    sa.Column('seen', sa.Boolean(), nullable=False),
    sa.Column('archived', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_inbox_items_event_id_events'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_inbox_items_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'event_id', name=op.f('pk_inbox_items'))
    )
    op.create_index('ix_inbox_items_event_id', 'inbox_items', ['event_id'], unique=False)
    op.create_index('ix_inbox_items_user_stream_offset', 'inbox_items',
                    ['user_id', 'stream', 'offset'], unique=False)


def _event_indexes(**kw: bool) -> None:
    op.create_index('ix_events_notification_offset', 'events', ['stream', 'offset'],
                    unique=False, postgresql_where=NOTIFICATIONS, sqlite_where=NOTIFICATIONS, **kw)
    op.create_index('ix_events_notification_created', 'events', ['stream', 'created_at', 'offset'],
                    unique=False, postgresql_where=NOTIFICATIONS, sqlite_where=NOTIFICATIONS, **kw)


def downgrade() -> None:
    op.drop_index('ix_events_notification_created', table_name='events')
    op.drop_index('ix_events_notification_offset', table_name='events')
    op.drop_index('ix_inbox_items_user_stream_offset', table_name='inbox_items')
    op.drop_index('ix_inbox_items_event_id', table_name='inbox_items')
    op.drop_table('inbox_items')
    op.drop_table('inbox_cursors')
