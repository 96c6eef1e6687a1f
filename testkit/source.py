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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_ATTEMPTS = 5


def parse(path: Path) -> ast.Module:
    """`ast.parse` of the file at `path`, again after a spurious recursion-depth error."""
    text = path.read_text()
    return again(lambda: ast.parse(text, str(path)))


def again(call: Callable[[], T]) -> T:
    """`call()`, once more after each spurious recursion-depth error (up to 5 tries)."""
    for attempt in range(_ATTEMPTS):
        try:
            return call()
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


_PARSES = threading.RLock()


def serialise_parses() -> None:
    """One lock around `ast.parse` in this process, for every caller, and a parse again
    after a spurious recursion-depth error.

    The race above is not only this kit's: pytest rewrites the modules it imports (test
    modules, and every module of its plugins' distributions, anyio's among them, which
    anyio imports lazily on first use, so possibly in a web app's thread), hypothesis
    parses the source of the lambdas it describes, 3.11's traceback parses a line to place
    its carets. Two of them at once fail with the recursion-depth mismatch, mostly where
    nothing can retry (an import, a plugin's hook). They all call `ast.parse` through the
    module: serialised here. The lock is re-entrant (a parse whose allocation runs a
    garbage collection whose finaliser parses, a warning's traceback say, goes on in the
    same thread), and that nested parse resets the interpreter's counter under the outer
    one, which then fails the same way although no other thread parsed (a fresh-clone run
    failed so, inside the lock, in hypothesis's lambda description): such a failure says
    nothing about the source, so the parse runs again."""
    if not getattr(ast.parse, "serialised", False):
        ast.parse = serialised(ast.parse)


def serialised(original: Callable[..., Any]) -> Callable[..., Any]:
    """`original` (an `ast.parse`) under the process's parse lock, tried `again`."""

    @functools.wraps(original)
    def parse(*args: Any, **kwargs: Any) -> Any:
        with _PARSES:
            return again(lambda: original(*args, **kwargs))

    parse.serialised = True  # type: ignore[attr-defined]
    return parse
