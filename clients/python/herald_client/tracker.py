"""The pure bookkeeping of a subscriber: positions seen per stream, and what an event means.

No I/O here: the subscriber asks `classify` what to do with an event (deliver it, drop a
duplicate, repair a gap, reset the stream) and tells the tracker what it delivered.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from .types import Meta, Position


class Verdict(enum.Enum):
    DELIVER = "deliver"  # the next offset (or the first one heard of a new stream)
    DUPLICATE = "duplicate"  # at or before what was delivered: drop
    GAP = "gap"  # offsets are missing before it: fetch them first
    RESET = "reset"  # another epoch: the stream's history was reset
    IGNORE = "ignore"  # a stream the application left


class Tracker:
    """Positions of every stream heard, as delivered to the application."""

    def __init__(self, positions: Mapping[str, Position] | None = None) -> None:
        self.seen: dict[str, Position] = dict(positions or {})
        self.left: set[str] = set()

    def classify(self, meta: Meta) -> Verdict:
        if meta.stream in self.left:
            return Verdict.IGNORE
        have = self.seen.get(meta.stream)
        if have is None:
            return Verdict.DELIVER
        if have.epoch is not None and have.epoch != meta.epoch:
            return Verdict.RESET
        if meta.offset <= have.offset:
            return Verdict.DUPLICATE
        if meta.offset == have.offset + 1:
            return Verdict.DELIVER
        return Verdict.GAP

    def advance(self, meta: Meta) -> None:
        self.seen[meta.stream] = Position(meta.offset, meta.epoch)

    def seed(self, stream: str, head: Position, recovered: bool | None) -> bool:
        """A head announced by `connected` or a join ack. Taken only for a stream not yet
        tracked or one the server could not recover (never jump past events being replayed).
        Returns True when that is a reset: the stream was tracked and could not be recovered.
        """
        self.left.discard(stream)
        have = self.seen.get(stream)
        if have is None:
            self.seen[stream] = head
            return False
        if recovered is False:
            self.seen[stream] = head
            return True
        if have.epoch is None and head.epoch is not None:
            self.seen[stream] = Position(have.offset, head.epoch)  # recovered: same epoch
        return False

    def reset(self, stream: str, head: Position) -> None:
        self.seen[stream] = head

    def follow(self, stream: str, position: Position) -> None:
        self.left.discard(stream)
        self.seen[stream] = position

    def leave(self, stream: str) -> None:
        self.seen.pop(stream, None)
        self.left.add(stream)

    def auth_positions(self) -> dict[str, dict[str, object]]:
        """What to send in `auth.positions` on (re)connect: every stream followed."""
        return {stream: pos.to_dict() for stream, pos in self.seen.items()}
