"""A private redis-server for fault tests: on a free port, no persistence, stoppable."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
import redis as redis_lib

from app.core.channels import room_channel
from testkit.eventually import eventually
from testkit.processes import WebNode, free_port

LOST = "socketio subscription lost"  # app/gateway/manager.py


class PrivateRedis:
    """A redis-server of our own on a free port, without persistence, that we may stop."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.skip("redis-server is not installed")
        with (self.log_dir / f"redis-{self.port}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT)
        with redis_lib.Redis.from_url(self.url, socket_connect_timeout=0.5) as client:
            try:
                eventually(client.ping, "private redis-server did not start", timeout=10,
                           ignoring=(redis_lib.RedisError,))
            except AssertionError as failed:  # callers that restart it catch RuntimeError
                raise RuntimeError(str(failed)) from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart_under(self, web: WebNode) -> None:
        """Stop, wait until `web` logged the loss of its Socket.IO subscription, start."""
        lost = web.log().count(LOST)
        self.stop()
        eventually(lambda: web.log().count(LOST) > lost,
                   "the web node did not notice that Redis stopped", 15)
        self.start()


def subscribed(client: redis_lib.Redis, channel: str, streams: Iterable[str] = (),
               timeout: float = 5) -> redis_lib.client.PubSub:
    """A PubSub on `channel` and on the channels of `streams` (the relay's SPUBLISH, see
    app/core/channels.py) once Redis confirmed every subscription (what is published from
    then on reaches it); its later get_message() calls skip subscription notices. Messages
    of the shared channel have type "message", those of a stream's channel "smessage"."""
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    rooms = [room_channel(channel, stream) for stream in streams]
    if rooms:
        pubsub.ssubscribe(*rooms)
    waiting = 1 + len(rooms)

    def confirmed() -> bool:
        nonlocal waiting
        message = pubsub.get_message(timeout=0.1)
        if message is not None and message["type"] in ("subscribe", "ssubscribe"):
            waiting -= 1
        return waiting == 0

    try:
        eventually(confirmed, f"Redis did not confirm the subscription to {channel}",
                   timeout=timeout, interval=0)
    except AssertionError:
        pubsub.close()
        raise
    pubsub.ignore_subscribe_messages = True
    return pubsub
