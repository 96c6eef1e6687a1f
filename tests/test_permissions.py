"""The permission matrix: every role against every action, allowed or the exact error.

Roles: the project's client, another client, a technician on the project, another
technician, an admin, a backend service. HTTP actions run against the real web node;
socket actions over real Socket.IO connections.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import socketio

from testkit.clients import SocketClient
from testkit.world import ROLES, World

OK = "ok"
FORBIDDEN = (403, "forbidden")


Request = tuple[str, Callable[[World], str], Callable[[World], Any]]

ACTIONS: dict[str, Request] = {
    "patch-project": ("PATCH", lambda w: f"/api/projects/{w.project}",
                      lambda w: {"progress": 50}),
    "patch-ticket": ("PATCH", lambda w: f"/api/tickets/{w.ticket}",
                     lambda w: {"status": "in-progress"}),
    "post-message": ("POST", lambda w: f"/api/tickets/{w.ticket}/messages",
                     lambda w: {"message": "hello"}),
    "add-document": ("POST", lambda w: f"/api/projects/{w.project}/documents",
                     lambda w: {"name": "plan.pdf", "url": "https://files.test/plan.pdf"}),
    "create-intervention": ("POST", lambda w: "/api/interventions",
                            lambda w: {"projectId": w.project, "title": "Boiler"}),
    "patch-intervention": ("PATCH", lambda w: f"/api/interventions/{w.intervention}",
                           lambda w: {"status": "scheduled"}),
    "create-quote": ("POST", lambda w: "/api/quotes",
                     lambda w: {"clientId": w.ids["client"], "amount": 250}),
    "patch-quote": ("PATCH", lambda w: f"/api/quotes/{w.quote}", lambda w: {"status": "sent"}),
    "read-quote": ("GET", lambda w: f"/api/quotes/{w.quote}", lambda w: None),
    "notify": ("POST", lambda w: "/api/notifications",
               lambda w: {"role": "client", "type": "info", "title": "Hi"}),
    "publish-event": ("POST", lambda w: "/api/events",
                      lambda w: {"stream": f"project-{w.project}", "type": "site-visit",
                                 "data": {"at": "noon"}}),
    "read-project-stream": ("GET", lambda w: f"/api/streams/project-{w.project}/events",
                            lambda w: None),
    "read-ticket-stream": ("GET", lambda w: f"/api/streams/ticket-{w.ticket}/events",
                           lambda w: None),
    "read-client-stream": ("GET", lambda w: f"/api/streams/user-{w.ids['client']}/events",
                           lambda w: None),
    "read-clients-stream": ("GET", lambda w: "/api/streams/clients/events", lambda w: None),
}

EDITORS = {"technician", "admin"}
MEMBERS = {"client", "technician", "admin"}
ALLOWED: dict[str, set[str]] = {
    "patch-project": EDITORS,
    "patch-ticket": EDITORS,
    "post-message": MEMBERS,
    "add-document": EDITORS,
    "create-intervention": EDITORS,
    "patch-intervention": EDITORS,
    "create-quote": {"admin"},
    "patch-quote": {"admin"},
    "read-quote": {"client", "admin"},
    "notify": {"admin"},
    "publish-event": {"service"},
    "read-project-stream": MEMBERS,
    "read-ticket-stream": MEMBERS,
    "read-client-stream": {"client", "admin"},
    "read-clients-stream": {"client", "other-client", "admin"},
}
SUCCESS = {"POST": 201, "PATCH": 200, "GET": 200}
NOT_FOUND = (404, "not_found")
# Who gets 404 rather than 403: what they may not see does not exist for them (the same
# answer as an unknown id). 403 stays for what they can see but may not do, and for
# routes of one role (admins, services).
OUTSIDERS = {"other-client", "other-technician", "service"}
HIDDEN: dict[str, set[str]] = {
    "patch-project": OUTSIDERS,
    "patch-ticket": OUTSIDERS,
    "post-message": {"other-client", "other-technician"},  # a service: 403, only users chat
    "add-document": OUTSIDERS,
    "create-intervention": OUTSIDERS,
    "patch-intervention": OUTSIDERS,
    "read-quote": {"technician", "other-technician", "other-client", "service"},
    "read-project-stream": OUTSIDERS,
    "read-ticket-stream": OUTSIDERS,
    "read-client-stream": {"other-client", "technician", "other-technician", "service"},
}


def _http(world: World, action: str, token: str | None) -> Any:
    method, path, body = ACTIONS[action]
    return world.api.request(method, path(world), token if token is not None else "",
                             json=body(world))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(ACTIONS))
def test_http_action_is_allowed_or_refused_with_the_exact_error(
    world: World, action: str, role: str
) -> None:
    response = _http(world, action, world.token(role))
    if role in ALLOWED[action]:
        assert response.status_code == SUCCESS[ACTIONS[action][0]], response.text
    else:
        refusal = NOT_FOUND if role in HIDDEN.get(action, set()) else FORBIDDEN
        assert (response.status_code, response.json()["error"]["code"]) == refusal


@pytest.mark.parametrize("action", list(ACTIONS))
def test_http_action_without_a_token_is_401_token_missing(world: World, action: str) -> None:
    response = _http(world, action, None)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_missing"


@pytest.mark.parametrize("action", list(ACTIONS))
def test_http_action_with_a_forged_token_is_401_token_invalid(world: World, action: str
                                                              ) -> None:
    response = _http(world, action, world.token("admin")[:-4] + "AAAA")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_invalid"


UNKNOWN = {
    "patch-project": ("PATCH", "/api/projects/99999", {"progress": 1}, "admin"),
    "patch-ticket": ("PATCH", "/api/tickets/99999", {"status": "open"}, "admin"),
    "post-message": ("POST", "/api/tickets/99999/messages", {"message": "x"}, "admin"),
    "add-document": ("POST", "/api/projects/99999/documents",
                     {"name": "a", "url": "https://x.test/a"}, "admin"),
    "create-intervention": ("POST", "/api/interventions", {"projectId": 99999}, "admin"),
    "patch-intervention": ("PATCH", "/api/interventions/99999", {"status": "done"}, "admin"),
    "create-quote": ("POST", "/api/quotes", {"clientId": 99999, "amount": 1}, "admin"),
    "patch-quote": ("PATCH", "/api/quotes/99999", {"status": "sent"}, "admin"),
    "read-quote": ("GET", "/api/quotes/99999", None, "admin"),
    "notify-user": ("POST", "/api/notifications",
                    {"userId": 99999, "type": "info", "title": "t"}, "admin"),
}


@pytest.mark.parametrize("action", list(UNKNOWN))
def test_unknown_id_is_404_not_found_and_stores_nothing(world: World, action: str) -> None:
    method, path, body, role = UNKNOWN[action]
    before = world.counts()
    response = world.api.request(method, path, world.token(role), json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
    assert world.counts() == before


SOCKET_ACTIONS: dict[str, Callable[[World], tuple[str, Any]]] = {
    "join-project": lambda w: ("join-project", w.project),
    "join-ticket": lambda w: ("join-ticket", {"ticketId": w.ticket}),
    "send-message": lambda w: ("send-message", {"ticketId": w.ticket, "message": "hi",
                                                "clientMessageId": uuid.uuid4().hex}),
    "typing-start": lambda w: ("typing-start", {"ticketId": w.ticket, "userName": "Ann"}),
}
SOCKET_ALLOWED = MEMBERS


@pytest.mark.anyio
@pytest.mark.parametrize("role", [r for r in ROLES if r != "service"])
async def test_socket_actions_are_allowed_or_acked_not_found(world: World, role: str) -> None:
    """An outsider's join, message or typing in a project or ticket: `not_found`, as for an
    unknown id."""
    socket = SocketClient(world.url, world.token(role))
    await socket.connect()
    try:
        for action, make in SOCKET_ACTIONS.items():
            event, data = make(world)
            ack = await socket.call(event, data)
            if role in SOCKET_ALLOWED:
                assert ack["ok"] is True, (action, ack)
            else:
                assert ack["ok"] is False and ack["error"]["code"] == "not_found", (action, ack)
        assert socket.sio.connected
    finally:
        await socket.close()


@pytest.mark.anyio
async def test_service_token_cannot_open_a_socket(world: World) -> None:
    socket = SocketClient(world.url, world.token("service"))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await socket.connect()
    assert socket.connect_error == {"message": "Authentication error",
                                    "data": {"code": "forbidden"}}


BAD_CALLS: dict[str, tuple[str, Callable[[World], Any], str]] = {
    "join-project-text": ("join-project", lambda w: "abc", "invalid_argument"),
    "join-project-float": ("join-project", lambda w: 1.5, "invalid_argument"),
    "join-project-bool": ("join-project", lambda w: True, "invalid_argument"),
    "join-project-missing-id": ("join-project", lambda w: {"id": 1}, "invalid_argument"),
    "join-project-unknown": ("join-project", lambda w: 99999, "not_found"),
    "join-project-bad-position": ("join-project",
                                 lambda w: {"projectId": w.project, "position": {"offset": -1}},
                                 "invalid_argument"),
    "join-ticket-unknown": ("join-ticket", lambda w: {"ticketId": 99999}, "not_found"),
    "join-ticket-list": ("join-ticket", lambda w: [w.ticket], "invalid_argument"),
    "leave-ticket-none": ("leave-ticket", lambda w: None, "invalid_argument"),
    "leave-project-negative": ("leave-project", lambda w: -3, "invalid_argument"),
    "typing-unknown-ticket": ("typing-start", lambda w: {"ticketId": 99999, "userName": "A"},
                              "not_found"),
    "typing-stop-text": ("typing-stop", lambda w: "stop", "invalid_argument"),
    "send-no-ticket": ("send-message", lambda w: {"message": "hi"}, "invalid_argument"),
    "send-unknown-ticket": ("send-message", lambda w: {"ticketId": 99999, "message": "hi"},
                            "not_found"),
    "send-bad-client-id": ("send-message",
                           lambda w: {"ticketId": w.ticket, "message": "hi",
                                      "clientMessageId": 7}, "invalid_argument"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(BAD_CALLS))
async def test_bad_socket_call_gets_its_error_ack_and_keeps_the_connection(
    world: World, case: str
) -> None:
    event, make, code = BAD_CALLS[case]
    socket = SocketClient(world.url, world.token("client"))
    await socket.connect()
    try:
        before = world.counts()
        ack = await socket.call(event, make(world))
        assert ack["ok"] is False and ack["error"]["code"] == code, ack
        assert isinstance(ack["error"]["message"], str) and ack["error"]["message"]
        assert (await socket.call("heartbeat"))["ok"] is True
        assert socket.sio.connected and world.counts() == before
    finally:
        await socket.close()
