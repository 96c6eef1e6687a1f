"""python-socketio's AsyncServer with the bounds a hostile client needs (DESIGN.md point 11).

- An engine.io session that never sends the Socket.IO CONNECT is closed after
  `connect_timeout` seconds (python-socketio keeps it forever otherwise).
- A binary event's attachments count toward the frame limit together: engine.io bounds
  each message, not the packet they make up, so 150 attachments of 999 KB each would
  otherwise be held in memory. Past the limit the connection closes.
- `close_transport(sid)` and `close_transports()` close one or every engine.io transport
  (not a Socket.IO disconnect, which official clients treat as final): clients reconnect
  and recover.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import socketio

log = logging.getLogger("herald.gateway")


class HeraldServer(socketio.AsyncServer):  # type: ignore[misc]
    def __init__(self, *args: Any, connect_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout
        self._binary_bytes: dict[str, int] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}

    # -- sessions that never connect ---------------------------------------------------
    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        result = await super()._handle_eio_connect(eio_sid, environ)
        self._timers[eio_sid] = asyncio.create_task(self._expect_connect(eio_sid))
        return result

    async def _expect_connect(self, eio_sid: str) -> None:
        await asyncio.sleep(self.connect_timeout)
        self._timers.pop(eio_sid, None)
        if self.manager.sid_from_eio_sid(eio_sid, "/") is None:
            log.info("engine.io session closed: no CONNECT within %ss", self.connect_timeout)
            await self._close_transport(eio_sid)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        timer = self._timers.pop(eio_sid, None)
        if timer is not None:
            timer.cancel()
        self._binary_bytes.pop(eio_sid, None)
        await super()._handle_eio_disconnect(eio_sid, reason)

    # -- binary attachments --------------------------------------------------------------
    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if eio_sid in self._binary_packet:
            total = self._binary_bytes.get(eio_sid, 0) + len(data) + 64
            if total > self.eio.max_http_buffer_size:
                del self._binary_packet[eio_sid]
                self._binary_bytes.pop(eio_sid, None)
                log.info("connection closed: binary packet over %d bytes",
                         self.eio.max_http_buffer_size)
                await self._close_transport(eio_sid)
                return
            self._binary_bytes[eio_sid] = total
        elif isinstance(data, str) and data[:1] in ("5", "6"):  # a binary event/ack header
            self._binary_bytes[eio_sid] = len(data)
        await super()._handle_eio_message(eio_sid, data)
        if eio_sid not in self._binary_packet:
            self._binary_bytes.pop(eio_sid, None)

    # -- closing -------------------------------------------------------------------------
    async def _close_transport(self, eio_sid: str) -> None:
        """Close one engine.io transport as a transport failure, never waiting on the client.

        engine.io's `disconnect()` sends a CLOSE packet (python clients take it as final),
        waits for the client to read its queue (a long-poll cancelled at shutdown never
        does) and leaves a websocket open until the client hangs up (a hostile one never
        does). Here: abort (no CLOSE packet, no wait), then a None on the socket's queue
        ends its writer, which closes the websocket.
        """
        socket = self.eio.sockets.get(eio_sid)
        if socket is None:
            return
        try:
            await socket.queue.put(None)  # ends a websocket's writer, or a pending long-poll
            await socket.close(wait=False, abort=True, reason=self.eio.reason.TRANSPORT_CLOSE)
        except Exception as exc:  # already gone
            log.info("transport close failed error=%s", type(exc).__name__)
        self.eio.sockets.pop(eio_sid, None)

    async def close_transport(self, sid: str) -> None:
        """Close the transport of the Socket.IO session `sid` as above: its client
        reconnects with its positions and recovers."""
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            await self._close_transport(eio_sid)

    async def close_transports(self) -> int:
        """Close every engine.io transport of this node; the number closed."""
        sids = list(self.eio.sockets)
        for eio_sid in sids:
            await self._close_transport(eio_sid)
        return len(sids)


__all__ = ["HeraldServer"]
