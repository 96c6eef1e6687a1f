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


def import_all(package: str) -> int:
    """Import every module of `package` now, and every name its lazy importers hand out.

    pytest rewrites the modules of its plugins' distributions (anyio's among them) as they
    are imported, with `ast.parse`; anyio imports its parts lazily, on first use, which in
    a test can be a web app's thread while the main thread parses (hypothesis describing a
    strategy, pytest rewriting a test module): the race above, in an import nothing can
    retry. Importing them all at start, before any thread, leaves nothing to parse later.
    Returns how many modules were imported."""
    import importlib
    import pkgutil
    import warnings

    root = importlib.import_module(package)
    modules = [root]
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError:  # an optional backend (trio) that is not installed
            continue
    with warnings.catch_warnings():  # deprecated aliases warn when touched
        warnings.simplefilter("ignore")
        for module in modules:
            for name in dir(module):
                try:
                    getattr(module, name)
                except (AttributeError, ImportError):
                    continue
    return len(modules)
