"""HERALD_WS_COMPRESSION: the web node as the Procfile starts it (`python -m
app.web`) offers websocket per-message deflate only when the setting is on."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from testkit.eventually import eventually_async
from testkit.processes import Process, free_port

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("setting", "negotiated"), [("true", True), ("false", False),
                                                     (None, False)])
async def test_web_node_negotiates_deflate_only_when_compression_is_on(
        setting: str | None, negotiated: bool, redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'herald.db'}", "PORT": str(port)}
    if setting is not None:
        env["HERALD_WS_COMPRESSION"] = setting
    web = Process("web", [sys.executable, "-m", "app.web", "--host", "127.0.0.1"],
                  env, tmp_path)
    web.spawn()
    try:
        def healthy() -> bool:
            assert web.alive(), web.log()[-2000:]
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200

        await eventually_async(healthy, lambda: web.log()[-2000:], 30, interval=0.1,
                               ignoring=(httpx.HTTPError,))
        url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        async with ws_connect(url, compression="deflate") as ws:  # the client offers it
            assert str(await ws.recv()).startswith("0{")  # engine.io OPEN
            assert ws.response is not None
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
        assert ("permessage-deflate" in extensions) is negotiated
    finally:
        web.stop()
