"""What the relay publishes, a real AsyncServer with AsyncRedisManager delivers (DESIGN §1)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.core.settings import get_settings
from app.outbox.publisher import RedisPublisher
from app.outbox.tables import EventRecord
from testkit.clients import SocketClient
from testkit.system import System

pytestmark = pytest.mark.anyio


async def test_web_node_delivers_relay_messages_as_payload_and_meta(pg_system: System) -> None:
    api = pg_system.api()
    user_id, user_token = api.user("client")
    client = SocketClient(pg_system.url, user_token)
    await client.connect()
    await client.wait_count("connected", 1)
    settings = get_settings()
    publisher = RedisPublisher(settings.sio_redis_url, channel=settings.socketio_channel)
    records = [
        EventRecord(f"00000000-0000-0000-0000-00000000000{i}", f"user-{user_id}", i, "e1",
                    "notification", {"type": "info", "title": "t", "message": f"m{i}"},
                    datetime.now(UTC))
        for i in (1, 2, 3)
    ]
    try:
        publisher.publish(records)
        got = await client.wait_count("notification", 3)
        assert [g.payload["message"] for g in got] == ["m1", "m2", "m3"]
        assert [g.meta for g in got] == [r.meta for r in records]
    finally:
        publisher.close()
        await client.close()
