"""Files that live outside `app/` in the clone, wherever Herald runs from.

An installed wheel carries copies made at build time by setup.py (the clone keeps the one
source): `app/_bundled/` (alembic.ini, migrations/, herald_client) and
`app/static/lib/herald-client/` (the JS client). An editable install or a checkout has no
copies: the same files are found in the clone.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # app/
BUNDLED = PACKAGE / "_bundled"
CLONE = PACKAGE.parent


def _first(*candidates: Path) -> Path:
    for path in candidates:
        if path.exists():
            return path
    return candidates[-1]


def alembic_ini() -> Path:
    return _first(BUNDLED / "alembic.ini", CLONE / "alembic.ini")


def migrations() -> Path:
    """The Alembic script directory (env.py, versions/)."""
    return _first(BUNDLED / "migrations", CLONE / "migrations")


def client_js() -> Path | None:
    """The JS client's modules (clients/js/src), or None when neither copy is present."""
    path = _first(PACKAGE / "static" / "lib" / "herald-client", CLONE / "clients" / "js" / "src")
    return path if path.is_dir() else None
