"""Where a subscriber keeps its positions between runs: memory, a JSON file, or callbacks."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from .types import Position


class PositionStore(Protocol):
    """Loads all positions at start; saves all of them whenever one changes."""

    def load(self) -> dict[str, Position]: ...

    def save(self, positions: Mapping[str, Position]) -> None: ...


def _decode(raw: Any) -> dict[str, Position]:
    out: dict[str, Position] = {}
    if isinstance(raw, dict):
        for stream, value in raw.items():
            try:
                out[str(stream)] = Position.from_dict(value)
            except (ValueError, AttributeError):
                continue  # one unreadable entry: that stream starts from its head
    return out


def _encode(positions: Mapping[str, Position]) -> dict[str, Any]:
    return {stream: pos.to_dict() for stream, pos in positions.items()}


def write_json_atomically(path: Path, data: Any) -> None:
    """Write `data` as JSON to a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class MemoryStore:
    """Positions for the life of the process (the default)."""

    def __init__(self, initial: Mapping[str, Position] | None = None) -> None:
        self.positions: dict[str, Position] = dict(initial or {})

    def load(self) -> dict[str, Position]:
        return dict(self.positions)

    def save(self, positions: Mapping[str, Position]) -> None:
        self.positions = dict(positions)


class FileStore:
    """Positions in a JSON file `{"<stream>": {"offset", "epoch"}}`, replaced atomically."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Position]:
        try:
            return _decode(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}  # a corrupt file: every stream starts from its head

    def save(self, positions: Mapping[str, Position]) -> None:
        write_json_atomically(self.path, _encode(positions))


class CallbackStore:
    """Positions kept by the application: `load()` returns and `save(data)` takes the JSON
    object `{"<stream>": {"offset", "epoch"}}` (e.g. a row in the service's own database)."""

    def __init__(self, load: Callable[[], Mapping[str, Any] | None],
                 save: Callable[[dict[str, Any]], None]) -> None:
        self._load, self._save = load, save

    def load(self) -> dict[str, Position]:
        return _decode(dict(self._load() or {}))

    def save(self, positions: Mapping[str, Position]) -> None:
        self._save(_encode(positions))
