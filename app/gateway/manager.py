"""A Redis client manager that holds back live events for a socket while it is replaying.

When a socket catches up on a stream, live events for that stream (arriving from the
relay through Redis) must not overtake the replayed ones. While a (socket, stream)
gate is open, live events for the stream are buffered for that socket and skipped in
the room broadcast; the replay then sends the buffer, minus what it already sent.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import socketio

Buffered = tuple[int, str, list[Any]]  # (offset, event name, arguments)


class HeraldRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """AsyncRedisManager with per-socket replay gates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gates: dict[str, dict[str, list[Buffered]]] = defaultdict(dict)

    def open_gate(self, sid: str, room: str) -> None:
        self._gates[room][sid] = []

    def take_buffer(self, sid: str, room: str) -> list[Buffered]:
        """Buffered live events for (sid, room), emptied; the gate stays open."""
        gate = self._gates.get(room, {})
        buffered = gate.get(sid, [])
        if sid in gate:
            gate[sid] = []
        return sorted(buffered, key=lambda item: item[0])

    def close_gate(self, sid: str, room: str) -> None:
        gate = self._gates.get(room)
        if gate is not None:
            gate.pop(sid, None)
            if not gate:
                self._gates.pop(room, None)

    def close_all(self, sid: str) -> None:
        for room in [r for r, gate in self._gates.items() if sid in gate]:
            self.close_gate(sid, room)

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        room = message.get("room")
        gate = self._gates.get(room) if isinstance(room, str) else None
        offset = _durable_offset(message)
        if gate and offset is not None:
            for buffer in gate.values():
                buffer.append((offset, message["event"], list(message["data"])))
            skip = message.get("skip_sid")
            skip_list = skip if isinstance(skip, list) else ([skip] if skip else [])
            message = {**message, "skip_sid": [*skip_list, *gate.keys()]}
        await super()._handle_emit(message)


def _durable_offset(message: dict[str, Any]) -> int | None:
    """The offset of a durable event message (payload + meta), None for anything else."""
    data = message.get("data")
    if message.get("binary") or not isinstance(data, list) or len(data) != 2:
        return None
    meta = data[1]
    if isinstance(meta, dict) and isinstance(meta.get("offset"), int) and "stream" in meta:
        return int(meta["offset"])
    return None
