"""Parsing this repository's own sources in tests (layers, test-kit rules).

CPython 3.11's AST builder keeps one recursion counter per interpreter; another thread
formatting a traceback (3.11 parses the source line to place its carets) while a test
parses a module can make `ast.parse` fail with "AST constructor recursion depth mismatch"
(python/cpython#106905). Such a failure says nothing about the source: parse it again.
"""

from __future__ import annotations

import ast
from pathlib import Path

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
