"""A Node program driven over stdin/stdout, one JSON object a line each way (the bench's and
the storm's load clients, bench/node/*.js): it answers `{"ready": true}` at start, then one
line per command it is sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
from pathlib import Path
from typing import Any

from testkit.processes import ROOT


class NodeScript:
    """`node <script>` with its stderr in `log_path`."""

    def __init__(self, node: str, script: Path, log_path: Path) -> None:
        self.node = node
        self.script = script
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        raise_fd_limit()  # inherited by the Node process
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                self.node, str(self.script), cwd=ROOT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                limit=2**24)
        assert (await self._read(30)).get("ready")

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"{self.script.name} exited: {self.log_path.read_text()[-2000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ask(self, command: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._read(timeout)

    async def close(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            with contextlib.suppress(RuntimeError, TimeoutError, OSError, ValueError):
                await self.ask({"cmd": "close"}, timeout=30)
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            pass
        finally:
            if proc.returncode is None:  # never left behind, even when cancelled
                proc.kill()
                await asyncio.shield(proc.wait())


def raise_fd_limit() -> None:
    """This process's open-file soft limit at the hard limit, for the Node processes it
    starts (each may hold 10,000 sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
