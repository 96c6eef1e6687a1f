"""Parsing this repository's own sources in tests (layers, test-kit rules).

CPython 3.11's AST builder keeps one recursion counter per interpreter; another thread
formatting a traceback (3.11 parses the source line to place its carets) while a test
parses a module can make `ast.parse` fail with "AST constructor recursion depth mismatch"
(python/cpython#106905). Such a failure says nothing about the source: parse it again.
"""

from __future__ import annotations

import ast
import functools
import threading
from pathlib import Path
from typing import Any

_ATTEMPTS = 5


def parse(path: Path) -> ast.Module:
    """`ast.parse` of the file at `path`, again after a spurious recursion-depth error."""
    text = path.read_text()
    for attempt in range(_ATTEMPTS):
        try:
            return ast.parse(text, str(path))
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")



_PARSES = threading.RLock()


def serialise_parses() -> None:
    """One lock around `ast.parse` in this process, for every caller.

    The race above is not only this kit's: pytest rewrites the modules it imports (test
    modules, and every module of its plugins' distributions, anyio's among them, which
    anyio imports lazily on first use, so possibly in a web app's thread), hypothesis
    parses the source of the lambdas it describes, 3.11's traceback parses a line to place
    its carets. Two of them at once fail with the recursion-depth mismatch, mostly where
    nothing can retry (an import, a plugin's hook). They all call `ast.parse` through the
    module: serialised here (re-entrant: a parse whose allocation runs a finaliser that
    parses in the same thread goes on)."""
    original = ast.parse
    if getattr(original, "serialised", False):
        return

    @functools.wraps(original)
    def parse(*args: Any, **kwargs: Any) -> Any:
        with _PARSES:
            return original(*args, **kwargs)

    parse.serialised = True  # type: ignore[attr-defined]
    ast.parse = parse
