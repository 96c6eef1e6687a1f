"""Fan-out without a task per socket.

python-socketio's room emit (`AsyncManager.emit`) encodes the packet once, then creates
one asyncio task per socket, each running engine.io's `send` (a ping-timeout check, then
the socket's queue), and waits for all of them. With thousands of sockets per event the
task creation and scheduling cost more than the websocket writes themselves.

`deliver` does what those tasks do, inline: the same Socket.IO packet (python-socketio's
`Packet`, encoded once) wrapped in one engine.io MESSAGE packet, put straight on each
recipient's engine.io queue, in one synchronous pass. So:

- the wire format is python-socketio's own (same Packet class, same engine.io packet);
- per-socket order holds: every packet for a socket goes through its one FIFO queue,
  and no await separates two recipients of one event, so events cannot interleave;
- a socket that is closed or closing gets nothing (engine.io would drop it too); one
  whose client missed its ping timeout is handed to engine.io's own `send`, which closes
  it exactly as the normal path would;
- `skip_sid` (the manager's gates and floors, a typing sender) is honoured;
- a socket whose websocket writer is idle (app/gateway/direct.py) gets the frame written
  to its transport at once — the same bytes the writer would write next — the frame
  built once per event for all of them.

What it does not handle is left to python-socketio (`deliver` returns False): binary
payloads (several engine.io packets per event) and emits with an ack callback (one packet
id per socket).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from engineio import packet as eio_packet
from socketio import packet as sio_packet

from app.gateway import direct


def arguments(data: Any) -> list[Any]:
    """The event's arguments as python-socketio's pub/sub path unpacks a message's data
    (a list is the argument list; None is none; anything else is one argument)."""
    if isinstance(data, list):
        return list(data)
    if data is None:
        return []
    return [data]


def skipped(skip_sid: Any) -> set[Any]:
    if isinstance(skip_sid, list | tuple | set):
        return set(skip_sid)
    return {skip_sid} if skip_sid is not None else set()


def encode(server: Any, namespace: str, event: str, args: list[Any]) -> Any | None:
    """The engine.io MESSAGE packet python-socketio's emit builds; None if binary."""
    pkt = server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args])
    if pkt.packet_type != sio_packet.EVENT:  # binary attachments: several packets
        return None
    return eio_packet.Packet(eio_packet.MESSAGE, pkt.encode())


async def deliver(manager: Any, message: dict[str, Any]) -> bool:
    """Deliver an `emit` message of python-socketio's pub/sub format to this node's sockets.

    Returns False (having sent nothing) when the message needs python-socketio's own path.
    """
    if message.get("binary") or message.get("callback") is not None:
        return False
    namespace = message.get("namespace") or "/"
    if namespace not in manager.rooms:
        return True
    server = manager.server
    pkt = encode(server, namespace, message["event"], arguments(message.get("data")))
    if pkt is None:
        return False
    participants = manager.get_participants(namespace, message.get("room"))
    late = put_all(server.eio, pkt, participants, skipped(message.get("skip_sid")))
    for socket in late:
        # Past its ping timeout: engine.io's own send closes it (and sends nothing).
        await socket.send(pkt)
    return True


def put_all(eio: Any, pkt: Any, participants: Iterable[tuple[str, str]],
            skip: set[Any]) -> list[Any]:
    """Put `pkt` on the queue of every participant's engine.io socket, in one pass with no
    await; returns the sockets whose client missed its ping timeout (not sent to)."""
    sockets = eio.sockets
    ping_timeout = eio.ping_timeout
    now = time.time()
    late = []
    frame: bytes | None = None
    for sid, eio_sid in participants:
        if sid in skip:
            continue
        socket = sockets.get(eio_sid)
        if socket is None or socket.closed or socket.closing:
            continue
        last_ping = socket.last_ping
        if last_ping and now - last_ping > ping_timeout:
            late.append(socket)
            continue
        if getattr(socket, "idle", None) is not None:  # a DirectSocket, writer idle
            if frame is None:
                frame = direct.text_frame(pkt.encode())
            if socket.write_frame(frame):
                continue
        socket.queue.put_nowait(pkt)
    return late


__all__ = ["deliver", "encode", "put_all"]
