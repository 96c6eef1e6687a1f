"""the inbox counts along the events' unique (stream, offset) index: one index fewer

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 04:00:00

`ix_events_notification_offset` ((stream, offset) WHERE type = 'notification', from
`0003`) held, for every notification, the key `uq_events_stream_offset` holds already: a
second random index leaf written per event appended (at a million streams a page read,
dirtied and written whole to the WAL), for the inbox's counts only. The counts ("after
the watermark: offset > N") now go along `uq_events_stream_offset` and skip the other
events of the stream; the newest-first pages keep `ix_events_notification_created`.

On PostgreSQL the index goes (and comes back on downgrade) CONCURRENTLY, outside the
migration's transaction: writers never wait on the events table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = 'ix_events_notification_offset'
NOTIFICATIONS = sa.text("type = 'notification'")


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            op.drop_index(INDEX, table_name='events', postgresql_concurrently=True,
                          if_exists=True)
    else:
        op.drop_index(INDEX, table_name='events')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        with op.get_context().autocommit_block():
            op.create_index(INDEX, 'events', ['stream', 'offset'], unique=False,
                            postgresql_where=NOTIFICATIONS, postgresql_concurrently=True,
                            if_not_exists=True)
    else:
        op.create_index(INDEX, 'events', ['stream', 'offset'], unique=False,
                        sqlite_where=NOTIFICATIONS)
