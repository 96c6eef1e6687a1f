"""The Node side of the side-by-side figures: a bare socket.io 4.8 server (the peer) and a
light websocket load client that drives Herald and the peer alike (bench/node/).

Node is needed; without it (or without `npm ci` in bench/node) these figures print
"skipped", except under CI=true, where a missing Node fails the run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx

from bench.env import SECRET
from bench.infra import LOG_DIR, ROOT, Process, free_port
from testkit.nodescript import NodeScript

NODE_DIR = ROOT / "bench" / "node"
CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


class NodeMissing(RuntimeError):
    """node, or bench/node's npm packages, are not installed."""


def require_node() -> str:
    """The node binary; NodeMissing when absent (a failure under CI=true)."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "socket.io").is_dir():
        why = ("node is not installed" if node is None
               else "bench/node has no node_modules (make js: npm ci)")
        if CI:
            raise RuntimeError(f"bench: {why}, and CI=true needs the Node peer")
        raise NodeMissing(why)
    return node


class NodePeer(Process):
    """`node bench/node/server.js`: socket.io 4.8, one process, HS256 check on connect."""

    def __init__(self, *, deflate: bool = False) -> None:
        self.port = free_port()
        super().__init__("node-peer", [require_node(), str(NODE_DIR / "server.js"),
                                       str(self.port), SECRET],
                         {"PEER_DEFLATE": "1" if deflate else "0"}, LOG_DIR)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return "node peer ready" in self.log()

    async def emit(self, room: str, event: str, data: list[list[Any]]) -> None:
        """Each item of `data` (an argument list) emitted to `room`, in order."""
        async with httpx.AsyncClient(timeout=60) as http:
            answer = await http.post(f"{self.url}/emit",
                                     json={"room": room, "event": event, "data": data})
            answer.raise_for_status()


class LoadClient(NodeScript):
    """`node bench/node/load.js`: many raw websocket clients, driven over stdin/stdout."""

    def __init__(self) -> None:
        super().__init__(require_node(), NODE_DIR / "load.js",
                         LOG_DIR / f"load-client-{os.getpid()}-{id(self)}.log")

    async def connect(self, url: str, tokens: list[str], *, inflight: int = 100,
                      deflate: bool = False) -> dict[str, Any]:
        """Open one socket per token (`inflight` handshakes at a time); every socket has had
        its `connected` event when this returns."""
        return await self.ask({"cmd": "connect", "url": url, "tokens": tokens,
                               "inflight": inflight, "deflate": deflate}, timeout=600)

    async def arm(self, count: int) -> None:
        """Start counting: `arrived()` then waits for `count` more events."""
        assert "armed" in await self.ask({"cmd": "expect", "count": count})

    async def arrived(self, timeout: float = 120) -> float:
        """Wall-clock time (time.time()) at which the armed count of events had arrived."""
        return float((await self._read(timeout))["t_last"])

    async def wire_bytes(self) -> int:
        return int((await self.ask({"cmd": "bytes"}))["wire"])


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
