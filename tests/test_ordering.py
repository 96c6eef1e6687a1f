"""The ordering model alone (app/gateway/ordering.py): gates, floors, marks, the bound.

Pure and in memory: no server, no Redis. The model at work under real sockets is in
tests/test_replay.py, tests/test_fanout.py, tests/test_redis_restart.py and
tests/test_send_queue.py.
"""

from __future__ import annotations

from typing import Any

from app.gateway.ordering import Ordering, event_size

ROOM = "ticket-1"


def ordering(rooms: dict[str, set[str]] | None = None, **bounds: Any) -> Ordering:
    members = rooms if rooms is not None else {}
    return Ordering(lambda room: members.get(room, set()), **bounds)


def live(model: Ordering, offset: int, room: str = ROOM, fill: str = "") -> list[str]:
    return model.on_live(room, offset, "note", [{"fill": fill}, {"offset": offset}])


def offsets(model: Ordering, sid: str, room: str = ROOM) -> list[int]:
    return [offset for offset, _, _ in model.take(sid, room).events]


def test_a_gate_holds_live_events_for_its_socket_only_and_gives_them_in_offset_order() -> None:
    model = ordering()
    model.open_gate("a", ROOM)
    assert live(model, 5) == ["a"] and live(model, 4) == ["a"]
    assert live(model, 9, room="ticket-2") == []  # another room: not held
    taken = model.take("a", ROOM)
    assert [offset for offset, _, _ in taken.events] == [4, 5] and taken.dropped is None
    assert taken.events[0] == (4, "note", [{"fill": ""}, {"offset": 4}])
    assert model.take("a", ROOM).events == []  # taken: emptied, still open
    assert model.is_gated("a", ROOM)
    assert live(model, 6) == ["a"] and offsets(model, "a") == [6]


def test_a_closed_gate_leaves_a_floor_that_skips_what_was_sent_until_a_newer_event() -> None:
    model = ordering()
    model.open_gate("a", ROOM)
    model.close_gate("a", ROOM, floor=6)  # the replay went up to 6
    assert not model.is_gated("a", ROOM) and not model.gated(ROOM)
    assert live(model, 5) == ["a"] and live(model, 6) == ["a"]  # a lagging relay's copies
    assert live(model, 7) == []  # caught up: the floor is gone
    assert live(model, 6) == []
    assert model.sids() == set()


def test_closing_without_a_floor_or_forgetting_a_socket_leaves_nothing_for_it() -> None:
    model = ordering()
    model.open_gate("a", ROOM)
    model.close_gate("a", ROOM)
    assert live(model, 1) == []
    model.open_gate("b", ROOM)
    model.open_gate("b", "ticket-2")
    live(model, 2)
    model.close_gate("b", "ticket-2", floor=3)
    assert sorted(model.close_all("b")) == [ROOM, "ticket-2"]
    assert live(model, 3) == [] and live(model, 3, room="ticket-2") == []
    assert model.sids() == set() and model.held("b") == (0, 0)


def test_opening_a_gate_removes_the_sockets_floor_there() -> None:
    model = ordering()
    model.open_gate("a", ROOM)
    model.close_gate("a", ROOM, floor=6)
    model.open_gate("a", ROOM)  # a second join replays again: the gate decides
    assert live(model, 3) == ["a"] and offsets(model, "a") == [3]


def test_gates_over_the_byte_bound_drop_what_they_hold_and_keep_the_highest_offset() -> None:
    one = event_size("note", [{"fill": "x" * 100}, {"offset": 10}])
    model = ordering(max_bytes=3 * one, max_packets=100)
    model.open_gate("slow", ROOM)
    model.open_gate("fast", ROOM)
    for offset in range(10, 13):
        live(model, offset, fill="x" * 100)
    assert model.held("slow") == (3 * one, 3) and model.overflows == 0
    model.take("fast", ROOM)  # the fast socket's replay takes as it goes
    assert live(model, 13, fill="x" * 100) == ["slow", "fast"]  # the 4th: over for "slow"
    assert model.held("slow") == (0, 0) and model.overflows == 1
    assert live(model, 14, fill="x" * 100) == ["slow", "fast"]  # still held back, not kept
    assert model.held("slow") == (0, 0)
    taken = model.take("slow", ROOM)
    assert taken.events == [] and taken.dropped == 14  # read 10..14 from the table
    assert offsets(model, "fast") == [13, 14]  # the other socket kept its own
    live(model, 15)
    assert model.take("slow", ROOM) == ([(15, "note", [{"fill": ""}, {"offset": 15}])], None)


def test_the_packet_bound_counts_every_gate_of_a_socket_and_empties_them_all() -> None:
    model = ordering(max_bytes=10**6, max_packets=3)
    model.open_gate("a", ROOM)
    model.open_gate("a", "ticket-2")
    model.open_gate("a", "ticket-3")
    live(model, 1)
    live(model, 7, room="ticket-2")
    live(model, 8, room="ticket-2")
    assert model.held("a")[1] == 3 and model.overflows == 0
    live(model, 2)  # the 4th event held for "a", over two gates
    assert model.held("a") == (0, 0) and model.overflows == 1
    assert model.take("a", ROOM) == ([], 2)
    assert model.take("a", "ticket-2") == ([], 8)
    assert model.take("a", "ticket-3") == ([], None)  # held nothing, dropped nothing


def test_taking_and_closing_gates_give_back_their_share_of_the_bound() -> None:
    model = ordering(max_bytes=10**6, max_packets=4)
    model.open_gate("a", ROOM)
    model.open_gate("a", "ticket-2")
    for offset in (1, 2):
        live(model, offset)
        live(model, offset, room="ticket-2")
    model.take("a", ROOM)
    model.close_gate("a", "ticket-2")
    assert model.held("a") == (0, 0)
    for offset in (3, 4, 5, 6):
        live(model, offset)
    assert model.overflows == 0 and offsets(model, "a") == [3, 4, 5, 6]


def test_a_room_mark_is_the_lowest_replay_end_and_follows_live_events_only_without_a_gap(
) -> None:
    rooms = {ROOM: {"a"}}
    model = ordering(rooms)
    assert model.mark(ROOM) is None and not model.watches(ROOM)
    model.note_sent("a", ROOM, 5)  # alone in the room: the mark is its replay's end
    assert model.mark(ROOM) == 5 and model.watches(ROOM)
    rooms[ROOM].add("b")
    model.note_sent("b", ROOM, 3)  # a second socket was sent less: the lower one
    assert model.mark(ROOM) == 3
    live(model, 4)
    live(model, 4)  # a duplicate changes nothing
    assert model.mark(ROOM) == 4
    live(model, 6)  # 5 was lost (not subscribed): the mark stays before the gap
    assert model.mark(ROOM) == 4
    model.set_mark(ROOM, 6)  # the catch-up sent everything through 6
    model.set_mark(ROOM, 2)  # an older catch-up's end never lowers it
    live(model, 7)
    assert model.mark(ROOM) == 7
    model.keep_marks([])
    assert model.mark(ROOM) is None


def test_marks_of_emptied_rooms_are_pruned_as_replays_end() -> None:
    rooms = {ROOM: {"a"}, "ticket-2": {"b"}}
    model = ordering(rooms)
    model.note_sent("a", ROOM, 1)
    del rooms[ROOM]
    for _ in range(1000):  # PRUNE_MARKS_EVERY notes
        model.note_sent("b", "ticket-2", 1)
    assert model.mark(ROOM) is None and model.mark("ticket-2") == 1
