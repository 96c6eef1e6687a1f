"""Room subscriptions (app/gateway/rooms.py), against a recording stand-in for redis-py's
PubSub (unit tests; tests/test_rooms.py runs them on real web nodes and Redis)."""

from __future__ import annotations

import asyncio

import pytest

from app.gateway.rooms import RoomChannels, is_stream

pytestmark = pytest.mark.anyio
PREFIX = "chan#"


class Recorder:
    """Records the commands sent; Redis's answers are given by the test (`answer`)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, list[str]]] = []

    async def ssubscribe(self, *channels: str) -> None:
        self.commands.append(("SSUBSCRIBE", list(channels)))

    async def sunsubscribe(self, *channels: str) -> None:
        self.commands.append(("SUNSUBSCRIBE", list(channels)))


def answer(rooms: RoomChannels, sub: Recorder) -> None:
    """Redis answers every command sent so far, channel by channel, in order."""
    for _, channels in sub.commands:
        for channel in channels:
            rooms.answered(channel.encode())
    sub.commands.clear()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_joins_of_one_loop_turn_go_in_one_ssubscribe() -> None:
    rooms, sub = RoomChannels(PREFIX), Recorder()
    rooms.up(sub)
    await settle()
    for i in range(1, 51):
        rooms.want(f"ticket-{i}")
    await settle()
    assert len(sub.commands) == 1
    command, channels = sub.commands[0]
    assert command == "SSUBSCRIBE" and sorted(channels) == sorted(
        f"chan#ticket-{i}" for i in range(1, 51))


async def test_ready_waits_for_redis_to_confirm_the_subscription() -> None:
    rooms, sub = RoomChannels(PREFIX), Recorder()
    rooms.up(sub)
    rooms.want("project-1")
    waiting = asyncio.create_task(rooms.ready(["project-1"]))
    await settle()
    assert not waiting.done() and not rooms.is_live("project-1")
    answer(rooms, sub)
    await asyncio.wait_for(waiting, 1)
    assert rooms.is_live("project-1")


async def test_ready_before_the_listener_first_came_up_waits_for_its_subscription() -> None:
    """A node that just started (python-socketio starts the listener at the first connect):
    no catch-up would cover what is published before the subscription, so a join waits."""
    rooms, sub = RoomChannels(PREFIX), Recorder()
    rooms.want("user-7")
    waiting = asyncio.create_task(rooms.ready(["user-7"]))
    await settle()
    assert not waiting.done()
    rooms.up(sub)
    await settle()
    assert not waiting.done()
    answer(rooms, sub)
    await asyncio.wait_for(waiting, 1)
    assert rooms.is_live("user-7")


async def test_a_room_emptied_and_filled_again_within_a_turn_sends_nothing() -> None:
    rooms, sub = RoomChannels(PREFIX), Recorder()
    rooms.up(sub)
    rooms.want("project-1")
    await settle()
    answer(rooms, sub)
    rooms.drop("project-1")
    rooms.want("project-1")
    await settle()
    assert sub.commands == [] and rooms.is_live("project-1")


async def test_a_room_resubscribed_is_live_only_once_its_last_command_is_answered() -> None:
    rooms, sub = RoomChannels(PREFIX), Recorder()
    rooms.up(sub)
    rooms.want("project-1")
    await settle()  # SSUBSCRIBE
    rooms.drop("project-1")
    await settle()  # SUNSUBSCRIBE
    rooms.want("project-1")
    await settle()  # SSUBSCRIBE again
    assert [c for c, _ in sub.commands] == ["SSUBSCRIBE", "SUNSUBSCRIBE", "SSUBSCRIBE"]
    waiting = asyncio.create_task(rooms.ready(["project-1"]))
    rooms.answered(b"chan#project-1")  # the first SSUBSCRIBE: not yet
    rooms.answered(b"chan#project-1")  # the SUNSUBSCRIBE
    await settle()
    assert not waiting.done() and not rooms.is_live("project-1")
    rooms.answered(b"chan#project-1")
    await asyncio.wait_for(waiting, 1)
    assert rooms.is_live("project-1")


async def test_a_lost_connection_lets_waiters_go_and_the_next_one_subscribes_every_room(
) -> None:
    rooms, first = RoomChannels(PREFIX), Recorder()
    rooms.up(first)
    rooms.want("project-1")
    rooms.want("user-2")
    await settle()
    waiting = asyncio.create_task(rooms.ready(["project-1"]))
    await settle()
    rooms.lost()
    await asyncio.wait_for(waiting, 1)  # the catch-up after the resubscription covers it
    assert not rooms.is_live("project-1")
    second = Recorder()
    rooms.up(second)
    await settle()
    assert len(second.commands) == 1
    assert sorted(second.commands[0][1]) == ["chan#project-1", "chan#user-2"]
    rooms.drop("user-2")
    await settle()
    assert second.commands[-1] == ("SUNSUBSCRIBE", ["chan#user-2"])


def test_only_stream_rooms_get_a_channel() -> None:
    assert is_stream("ticket-3") and is_stream("clients")
    assert not is_stream(None) and not is_stream("Zx8aQ2kLm0pR7sT1uVwY")
    assert not is_stream("ticket-0")


async def test_a_flush_sends_only_the_rooms_changed_since_the_last_one() -> None:
    rooms, sub = RoomChannels(PREFIX), Recorder()
    rooms.up(sub)
    for i in range(1, 1001):
        rooms.want(f"user-{i}")
    await settle()
    answer(rooms, sub)
    rooms.want("user-1001")
    rooms.drop("user-5")
    rooms.drop("user-6")
    rooms.want("user-6")  # back within the turn: nothing for it
    await settle()
    assert sub.commands == [("SUNSUBSCRIBE", ["chan#user-5"]),
                            ("SSUBSCRIBE", ["chan#user-1001"])]
    answer(rooms, sub)
    assert rooms.is_live("user-1001") and rooms.is_live("user-6")
    assert not rooms.is_live("user-5") and rooms.live_count == 1000
