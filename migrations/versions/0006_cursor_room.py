"""room on the pages of streams and relay cursors (fillfactor 80)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 01:40:00

`streams` and `relay_cursors` get fillfactor 80: a page keeps room for a row's next
version, so the relay's cursor advance (no indexed column changes) is a HOT update (no
new index entry, no second page) even on pages filled by one bulk insert (a restore, a
backfill), and a head bump's new version can stay on its page. It applies to pages
written from now on (no rewrite here; VACUUM FULL applies it to the existing pages, if
wanted, under an exclusive lock). SQLite has no fillfactor: nothing to do there.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("streams", "relay_cursors")


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
