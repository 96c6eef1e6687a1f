"""herald_client.presence.PresenceBook, alone: a snapshot plus the events around it."""

from __future__ import annotations

from typing import Any

from herald_client.presence import PresenceBook


def member(user_id: int, name: str) -> dict[str, Any]:
    return {"userId": user_id, "name": name, "role": "client"}


def join(stream: str, user_id: int, name: str) -> dict[str, Any]:
    return {"stream": stream, "user": member(user_id, name)}


def test_events_that_arrive_before_the_snapshot_are_applied_on_top_of_it() -> None:
    book = PresenceBook(lambda coro: None)
    heard: list[list[dict[str, Any]]] = []
    book.on("ticket-1", heard.append)
    book.begin("ticket-1")
    book.event("presence-leave", {"stream": "ticket-1", "userId": 2})  # after the snapshot
    book.event("presence-join", join("ticket-1", 3, "Cleo"))
    assert heard == []  # nothing known yet
    book.snapshot("ticket-1", [member(1, "Tom"), member(2, "Ann")])
    assert heard == [[member(3, "Cleo"), member(1, "Tom")]]


def test_a_join_of_someone_present_changes_nothing_and_a_left_room_is_empty() -> None:
    book = PresenceBook(lambda coro: None)
    heard: list[list[dict[str, Any]]] = []
    book.snapshot("project-4", [member(1, "Tom")])
    book.on("project-4", heard.append)  # known already: called at once
    book.event("presence-join", join("ticket-9", 2, "Ann"))  # another room: not followed
    book.event("presence-leave", {"stream": "project-4", "userId": 5})  # nobody: no change
    book.forget("project-4")
    assert heard == [[member(1, "Tom")], []]
    assert book.members("project-4") is None
