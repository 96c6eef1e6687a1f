"""Issue 15's probe of row 3, run by hand (not collected: ~70 s):
`.venv/bin/pytest tests/probe_stuck_reader.py -s`.

A client that never reads re-joins a 20,000-event ticket from offset 0 every second for
40 s (reconnecting when its transport is closed); prints the node's RSS (this process:
the gateway runs in it). A measurement, not a test: nothing is asserted.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from testkit.localnode import local_node
from testkit.system import System
from tests.test_send_queue import _stuck_client, _ticket

pytestmark = pytest.mark.anyio


def rss() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def test_probe_stuck_reader(pg_system_session: System, redis_url: str) -> None:
    ticket = _ticket(pg_system_session, 20000)
    async with local_node(pg_system_session, redis_url) as node:
        start = rss()
        peak = start
        joins = reconnects = 0
        ws = await _stuck_client(node, ticket.user, ticket.id, offset=0)
        joins += 1
        for _ in range(40):  # a join a second for about 40 s, sampling RSS
            await asyncio.sleep(1)
            peak = max(peak, rss())
            try:
                await ws.send("42" + json.dumps(["join-ticket", {"ticketId": ticket.id,
                                                 "position": {"offset": 0}}]))
                joins += 1
            except ConnectionClosed:
                reconnects += 1
                ws = await _stuck_client(node, ticket.user, ticket.id, offset=0)
                joins += 1
        print(f"PROBE rss start={start:.0f}MB peak={peak:.0f}MB end={rss():.0f}MB "
              f"joins={joins} reconnects={reconnects} "
              f"overflows={getattr(node.gateway.sio, 'overflows', 'n/a')}")
        await ws.close()
