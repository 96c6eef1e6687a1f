"""Arbitrary JSON at every Socket.IO handler and at the HTTP write routes.

Whatever arrives: an ack or a 4xx, never a crash, a 500 or a dropped connection, and
nothing stored except what was acknowledged as stored.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from testkit.clients import SocketClient
from testkit.world import World

FUZZ = settings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# What a hostile probe found (issue 8): ids just past the 32-bit columns and far beyond,
# NUL, lone surrogates, trailing newlines, non-ASCII digits, blank text, deep nesting.
BIG_INTS = (st.integers(2**31 - 2, 2**31 + 2) | st.integers(2**53 - 2, 2**53 + 2)
            | st.integers(2**63 - 2, 2**70) | st.sampled_from([2**64, 10**30]))
ODD_TEXT = st.sampled_from(["a\x00b", "\ud800", "x\udfff", "user-2\n", "x\n", "project-1\n",
                            "\u0662", "002", " 1", "2147483648", "   ", "\u3000", "\u202e1"])
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-3, 2**64) | BIG_INTS
           | st.floats() | st.text(max_size=30) | ODD_TEXT)
CLEAN_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
CLEAN_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | CLEAN_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(CLEAN_TEXT, inner, max_size=3),
    max_leaves=8)


def nested(levels: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": 1}
    for i in range(levels - 1):
        data = {"d": data} if i % 2 else {"l": [data]}
    return data


DEEP = st.integers(30, 40).map(nested) | st.sampled_from([nested(100), nested(600)])
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12) | ODD_TEXT, inner, max_size=4),
                    max_leaves=16) | DEEP


def _near_valid(world: World) -> st.SearchStrategy[Any]:
    """Objects with the handlers' real keys and values that are sometimes right."""
    ids = st.sampled_from([world.project, world.ticket, str(world.ticket), 0, -1, 2**70,
                           99999, 2**31, 2**31 - 1, str(2**31), f"0{world.ticket}",
                           f"{world.ticket}\n", "\u0662"]) | BIG_INTS | JSON
    texts = (st.text(max_size=40) | st.sampled_from(["", "x" * 10_001, "a\x00b", "\ud800"])
             | ODD_TEXT | JSON)
    position = st.fixed_dictionaries({}, optional={"offset": ids, "epoch": texts}) | JSON
    return st.fixed_dictionaries({}, optional={
        "ticketId": ids, "projectId": ids, "message": texts, "userName": texts,
        "clientMessageId": texts, "position": position})


def _inbox_mark_like() -> st.SearchStrategy[Any]:
    """`inbox-mark` arguments: right ones (`all`, or ids of items nobody has), and ones
    with a field wrong now and then."""
    real = st.sampled_from(["read", "unread", "seen", "archive", "unarchive"])
    wrong = st.sampled_from(["burn", "READ", ""]) | ODD_TEXT
    uuids = st.lists(st.uuids().map(str), min_size=1, max_size=3)
    ids = uuids | st.lists(st.uuids().map(str) | ODD_TEXT | BIG_INTS, max_size=3) | JSON
    return st.one_of(
        st.fixed_dictionaries({"action": st.sampled_from(["read", "seen"]),
                               "all": st.just(True)}),
        st.fixed_dictionaries({"action": real, "ids": uuids}),
        st.fixed_dictionaries({"action": real | wrong},
                              optional={"ids": ids, "all": st.booleans() | JSON}))


HANDLERS = ["join-project", "leave-project", "join-ticket", "leave-ticket", "typing-start",
            "typing-stop", "send-message", "heartbeat", "inbox-mark"]


def _valid_message(data: Any, ticket: int) -> bool:
    if not isinstance(data, dict):
        return False
    tid, text = data.get("ticketId"), data.get("message")
    return (tid in (ticket, str(ticket)) and not isinstance(tid, bool)
            and isinstance(text, str) and 1 <= len(text) <= 10_000)


@pytest.mark.parametrize("handler", HANDLERS)
def test_socket_handler_survives_arbitrary_json(world: World, handler: str) -> None:
    stored_before = world.counts()
    accepted: list[int] = []
    marked = [0]  # inbox-marks accepted: each writes at most one `inbox-updated`
    with asyncio.Runner() as runner:
        socket = SocketClient(world.url, world.token("client"))
        runner.run(socket.connect())
        try:
            @FUZZ
            @given(data=JSON | (_inbox_mark_like() if handler == "inbox-mark"
                                else _near_valid(world)))
            def call(data: Any) -> None:
                ack = runner.run(socket.call(handler, data))
                assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
                event("ok" if ack["ok"] else ack["error"]["code"])
                if ack["ok"] is False:
                    assert ack["error"]["code"] != "internal", (data, ack)
                    assert set(ack["error"]) == {"code", "message"}
                if handler == "send-message" and ack["ok"]:
                    assert _valid_message(data, world.ticket), data
                    if not ack["duplicate"]:
                        accepted.append(ack["messageId"])
                if handler == "inbox-mark" and ack["ok"]:
                    marked[0] += 1
                assert socket.sio.connected

            call()
            assert runner.run(socket.call("heartbeat"))["ok"] is True
        finally:
            runner.run(socket.close())
    events, messages, keys = world.counts()
    assert (messages, keys) == (stored_before[1] + len(accepted), stored_before[2])
    assert 0 <= events - stored_before[0] - len(accepted) <= marked[0]


def _event_like() -> st.SearchStrategy[Any]:
    """Events that are mostly right, with one field now and then wrong or missing."""
    good_streams = st.sampled_from(["clients", "admins", "technicians", "user-1", "project-1",
                                    "ticket-1"])
    streams = st.one_of(good_streams, good_streams, good_streams, st.sampled_from(
        ["ticket-0", "room-1", "clients ", "USER-1", "user-99999999999999999999",
         "user-2\n", "clients\n", "project-2147483648", "ticket-\u0662"]), JSON)
    good_types = st.sampled_from(["x", "a-b", "invoice-issued"])
    types = st.one_of(good_types, good_types, good_types,
                      st.sampled_from(["A", "a--b", "-a", "a" * 101, "", "x\n"]), JSON)
    good_data = st.dictionaries(CLEAN_TEXT, CLEAN_JSON, max_size=3)
    data = st.one_of(good_data, good_data, good_data, st.sampled_from(
        [{"v": "\ud800"}, {"v": "a\x00b"}, {"v": float("inf")}, {"v": "x" * 70_000},
         nested(32), nested(33), nested(300), {"n": 2**70}]), JSON)
    keys = st.none() | st.text(max_size=10) | st.just("k" * 201) | ODD_TEXT | JSON
    event = st.fixed_dictionaries({"stream": streams, "type": types, "data": data},
                                  optional={"idempotencyKey": keys})
    good = st.fixed_dictionaries({"stream": good_streams, "type": good_types,
                                  "data": good_data}, optional={"idempotencyKey": keys})
    partial = st.fixed_dictionaries(
        {}, optional={"stream": streams, "type": types, "data": data, "extra": JSON})
    return st.one_of(good, event, event, st.lists(good, min_size=1, max_size=4),
                     st.lists(event, max_size=4), partial)


def _created(body: Any) -> int:
    items = body if isinstance(body, list) else [body]
    return sum(1 for item in items if not item["duplicate"])


def test_publishing_api_survives_arbitrary_json(world: World) -> None:
    before = world.counts()
    appended: list[int] = []
    headers = {"Authorization": f"Bearer {world.token('service')}",
               "Content-Type": "application/json"}
    with httpx.Client(base_url=world.url, timeout=20) as http:
        @settings(FUZZ, max_examples=60)
        @given(body=JSON | _event_like())
        def post(body: Any) -> None:
            response = http.post("/api/events", content=json.dumps(body), headers=headers)
            assert response.status_code in {200, 201, 410, 413, 422}, (body, response.text)
            event(str(response.status_code) + (
                "" if response.status_code < 300 else " " + response.json()["error"]["code"]))
            if response.status_code >= 300:
                assert set(response.json()["error"]) == {"code", "message"}
            else:
                appended.append(_created(response.json()))

        post()
    events, messages, _ = world.counts()
    assert events == before[0] + sum(appended) and messages == before[1]


WRITE_ROUTES = {
    ("PATCH", "/api/tickets/{t}"): ["status", "priority"],
    ("POST", "/api/tickets/{t}/messages"): ["message", "clientMessageId"],
    ("POST", "/api/projects/{p}/documents"): ["name", "url"],
    ("POST", "/api/interventions"): ["projectId", "status", "title", "scheduledAt", "notes"],
    ("PATCH", "/api/interventions/{i}"): ["status", "title", "scheduledAt", "notes"],
    ("POST", "/api/quotes"): ["clientId", "projectId", "amount", "status"],
    ("PATCH", "/api/quotes/{q}"): ["amount", "status"],
    ("POST", "/api/notifications"): ["userId", "role", "type", "title", "message"],
}


@pytest.mark.parametrize(("method", "path"), list(WRITE_ROUTES))
def test_write_route_answers_arbitrary_json_with_a_4xx_or_success(
    world: World, method: str, path: str
) -> None:
    url = path.format(t=world.ticket, p=world.project, i=world.intervention, q=world.quote)
    headers = {"Authorization": f"Bearer {world.token('admin')}",
               "Content-Type": "application/json"}
    fields = st.sampled_from(WRITE_ROUTES[(method, path)])
    good = st.sampled_from([
        "open", "high", "https://x.test/a", "planned", "draft", "info", "client", "1e400",
        "NaN", "12.5", "\ud800", "a\x00b", world.project, world.ids["client"], 2**40, 10**30,
        2**31, 2**31 - 1, "   ", "x\n", [2**31], [world.ids["technician"], 2**63]])
    values = st.one_of(good, good, JSON)
    with httpx.Client(base_url=world.url, timeout=20) as http:
        @settings(FUZZ, max_examples=15)
        @given(body=JSON | st.dictionaries(fields, values, max_size=5))
        def send(body: Any) -> None:
            response = http.request(method, url, content=json.dumps(body), headers=headers)
            assert response.status_code < 500, (body, response.text)
            event(str(response.status_code))

        send()
