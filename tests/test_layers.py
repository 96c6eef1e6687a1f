"""The layers are visible in the tree, and no import runs upward (README, "Development").

core < outbox < portal < {gateway, api, cli} < app.main (app.web: its launcher); workers use
core and outbox; app never imports workers; testkit serves tests/ and bench/, which never
import each other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from testkit.source import parse

ROOT = Path(__file__).resolve().parents[1]

# package -> the packages it may import (besides itself and the standard/third-party ones)
ALLOWED: dict[str, set[str]] = {
    "app.core": set(),
    "app.outbox": {"app.core"},
    "app.portal": {"app.core", "app.outbox"},
    "app.gateway": {"app.core", "app.outbox", "app.portal"},
    "app.api": {"app.core", "app.outbox", "app.portal"},
    "app.cli": {"app.core", "app.outbox", "app.portal"},
    "app.main": {"app.core", "app.outbox", "app.portal", "app.gateway", "app.api"},
    "app.web": {"app.core"},  # the web process: uvicorn serving "app.main:app"
    "workers": {"app.core", "app.outbox"},
    "testkit": {"app", "workers"},
    "bench": {"app", "workers", "testkit"},
    "tests": {"app", "workers", "testkit"},
}
UNITS = sorted(ALLOWED, key=len, reverse=True)


def unit(module: str) -> str | None:
    """The layer a module belongs to (`app.outbox.writer` -> `app.outbox`)."""
    for name in UNITS:
        if module == name or module.startswith(name + "."):
            return name
    return "app" if module == "app" else None


def imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """Every module `path` imports, at any depth (lazy imports inside functions too)."""
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
            elif node.module:
                for alias in node.names:  # `from app import x` imports app.x
                    yield node.lineno, f"{node.module}.{alias.name}"


def allowed(source: str, target: str) -> bool:
    src, dst = unit(source), unit(target)
    if src is None or dst is None or src == dst:
        return True
    permitted = ALLOWED[src]
    return dst in permitted or any(dst.startswith(p + ".") for p in permitted) \
        or (dst == "app" and any(p.startswith("app") for p in permitted))


def violations(root: Path) -> list[str]:
    found = []
    for top in ("app", "workers", "testkit", "bench", "tests"):
        for path in sorted((root / top).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for line, target in imports(path, module):
                if not allowed(module, target):
                    found.append(f"{path.relative_to(root)}:{line}: {module} imports {target}")
    return found


def test_no_module_imports_a_higher_layer() -> None:
    assert violations(ROOT) == []


def test_every_app_module_lives_in_a_layer() -> None:
    loose = [p.name for p in (ROOT / "app").glob("*.py")
             if p.name not in {"__init__.py", "main.py", "web.py"}]
    assert loose == []


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    """The checker itself: an outbox module importing the portal is caught."""
    (tmp_path / "app" / "outbox").mkdir(parents=True)
    (tmp_path / "app" / "outbox" / "bad.py").write_text(
        "def f():\n    from app.portal import models\n    import workers.tasks\n")
    assert violations(tmp_path) == [
        "app/outbox/bad.py:2: app.outbox.bad imports app.portal.models",
        "app/outbox/bad.py:3: app.outbox.bad imports workers.tasks",
    ]
