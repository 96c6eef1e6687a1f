"""What a hostile client sends over HTTP and Socket.IO: refused with a 4xx or an error ack.

Each test is one row of issue 8's hostile probe, against a real web node on PostgreSQL
(whose Integer columns are 32-bit): never a 500, never an `internal` ack, nothing stored.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import httpx
import pytest

from testkit.clients import SocketClient, token
from testkit.world import World

BIG_IDS = [2**31, 2**53 - 1, 2**63, 2**70]


def _calls(world: World, big: int) -> list[tuple[str, str, Any]]:
    client = world.ids["client"]
    return [
        ("GET", f"/api/projects/{big}", None),
        ("PATCH", f"/api/projects/{big}", {"progress": 5}),
        ("PATCH", f"/api/tickets/{big}", {"status": "open"}),
        ("POST", f"/api/tickets/{big}/messages", {"message": "hi"}),
        ("POST", f"/api/projects/{big}/documents", {"name": "a", "url": "https://x.test/a"}),
        ("PATCH", f"/api/interventions/{big}", {"status": "done"}),
        ("GET", f"/api/quotes/{big}", None),
        ("PATCH", f"/api/quotes/{big}", {"status": "sent"}),
        ("POST", "/api/projects", {"name": "P", "clientId": big}),
        ("POST", "/api/projects", {"name": "P", "clientId": client, "technicianIds": [big]}),
        ("POST", "/api/tickets", {"projectId": big, "subject": "S"}),
        ("POST", "/api/interventions", {"projectId": big}),
        ("POST", "/api/quotes", {"clientId": big, "amount": "1.00"}),
        ("POST", "/api/quotes", {"clientId": client, "projectId": big, "amount": "1.00"}),
        ("POST", "/api/notifications", {"userId": big, "type": "info", "title": "t"}),
        ("GET", f"/api/streams/project-{big}/events", None),
        ("GET", f"/api/streams/user-{big}/events", None),
    ]


@pytest.mark.parametrize("big", BIG_IDS)
def test_ids_beyond_the_integer_columns_get_404_or_422_on_every_route(
    world: World, big: int
) -> None:
    before = world.counts()
    for method, path, body in _calls(world, big):
        response = world.api.request(method, path, json=body)
        assert response.status_code in {404, 422}, (method, path, response.text)
        assert set(response.json()["error"]) == {"code", "message"}
    service = {"Authorization": f"Bearer {world.token('service')}"}
    published = world.api.http.post("/api/events", headers=service, json={
        "stream": f"ticket-{big}", "type": "x", "data": {}})
    assert published.status_code == 422, published.text
    assert world.counts() == before


@pytest.mark.parametrize("big", BIG_IDS)
def test_ids_beyond_the_integer_columns_get_an_error_ack_from_every_handler(
    world: World, big: int
) -> None:
    calls = [("join-project", big), ("join-project", {"projectId": big}),
             ("join-ticket", big), ("leave-project", big), ("leave-ticket", {"ticketId": big}),
             ("typing-start", {"ticketId": big}), ("typing-stop", {"ticketId": big}),
             ("send-message", {"ticketId": big, "message": "hi"}),
             ("join-project", str(big))]

    async def run() -> list[Any]:
        socket = SocketClient(world.url, world.token("admin"))
        await socket.connect()
        try:
            return [await socket.call(name, data) for name, data in calls]
        finally:
            await socket.close()

    for (name, _), ack in zip(calls, asyncio.run(run()), strict=True):
        assert ack["ok"] is False and ack["error"]["code"] != "internal", (name, ack)


def test_connect_with_a_huge_id_position_is_connected_with_recovered_false(
    world: World
) -> None:
    async def run() -> SocketClient:
        socket = SocketClient(world.url, world.token("admin"), positions={
            "project-2147483648": {"offset": 0}, "ticket-9223372036854775808": {"offset": 0},
            f"project-{world.project}": {"offset": 0}})
        await socket.connect()
        try:
            await socket.wait_count("connected", 1)
        finally:
            await socket.close()
        return socket

    connected = asyncio.run(run()).named("connected")[0].payload
    assert connected["recovered"]["project-2147483648"] is False
    assert connected["recovered"].get("ticket-9223372036854775808") in {False, None}
    assert f"project-{world.project}" in connected["positions"]


def _deep(levels: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        data = {"d": data}
    return data


def test_event_data_deeper_than_32_levels_is_refused_with_422(world: World) -> None:
    service = {"Authorization": f"Bearer {world.token('service')}"}
    before = world.counts()
    ok = world.api.http.post("/api/events", headers=service, json={
        "stream": "clients", "type": "deep", "data": _deep(32)})
    assert ok.status_code == 201, ok.text
    for levels in (33, 300, 5000):
        deep = '{"d":' * (levels - 1) + '{"leaf":1}' + "}" * (levels - 1)
        body = '{"stream":"clients","type":"deep","data":' + deep + "}"
        refused = world.api.http.post("/api/events", content=body,
                                      headers={**service, "Content-Type": "application/json"})
        assert refused.status_code == 422, (levels, refused.text[:300])
        assert refused.json()["error"]["code"] in {"invalid", "invalid_data"}
    assert world.counts()[0] == before[0] + 1
    page = world.api.request("GET", "/api/streams/clients/events?limit=1000")
    assert page.status_code == 200


def test_publish_in_process_refuses_data_deeper_than_32_levels(world: World) -> None:
    from app.core.errors import InvalidInput
    from app.outbox.publish import publish

    with world.system.factory() as session, session.begin(), \
            pytest.raises(InvalidInput, match="levels"):
        publish(session, "clients", "deep", _deep(33))


def test_cli_emit_refuses_data_deeper_than_32_levels(world: World) -> None:
    from testkit.processes import BIN

    result = subprocess.run(
        [str(BIN / "herald"), "emit", "--stream", "clients", "--type", "deep",
         "--data", json.dumps(_deep(40))],
        env={**world.system.webs[0].env}, capture_output=True, text=True, timeout=60)
    assert result.returncode in {1, 2}, result.stdout
    assert "levels" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("key", ["a\x00b", "\ud800", "k\udfff"])
def test_idempotency_key_with_nul_or_lone_surrogate_is_refused_with_422(
    world: World, key: str
) -> None:
    body = json.dumps({"stream": "clients", "type": "x", "data": {}, "idempotencyKey": key})
    response = world.api.http.post(
        "/api/events", content=body.encode(),
        headers={"Authorization": f"Bearer {world.token('service')}",
                 "Content-Type": "application/json"})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(("stream", "type_"), [("user-2\n", "x"), ("clients", "x\n"),
                                               ("clients\n", "x"), ("project-1\n", "x")])
def test_names_with_a_trailing_newline_are_refused_with_422(
    world: World, stream: str, type_: str
) -> None:
    response = world.api.http.post(
        "/api/events", json={"stream": stream, "type": type_, "data": {}},
        headers={"Authorization": f"Bearer {world.token('service')}"})
    assert response.status_code == 422, response.text


def test_a_position_named_with_a_trailing_newline_is_not_joined(world: World) -> None:
    async def run() -> dict[str, Any]:
        socket = SocketClient(world.url, world.token("admin"), positions={
            f"project-{world.project}\n": {"offset": 0}})
        await socket.connect()
        try:
            return (await socket.wait_count("connected", 1))[0].payload  # type: ignore[no-any-return]
        finally:
            await socket.close()

    connected = asyncio.run(run())
    assert connected["recovered"].get(f"project-{world.project}\n") is not True
    assert f"project-{world.project}\n" not in connected["positions"]


@pytest.mark.parametrize("body", [b'{"progress": ', b'{"progress": 1}\xff', b"\xff\xfe"])
def test_invalid_json_body_is_a_422(world: World, body: bytes) -> None:
    before = world.counts()
    response = world.api.request("PATCH", f"/api/projects/{world.project}", content=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid"
    assert world.counts() == before


def test_empty_project_patch_writes_no_event(world: World) -> None:
    before = world.counts()
    response = world.api.request("PATCH", f"/api/projects/{world.project}", json={})
    assert response.status_code in {200, 422}, response.text
    assert world.counts() == before


@pytest.mark.parametrize("text", ["   ", "\n\t ", "\u3000"])
def test_a_blank_message_is_refused_over_http_and_socket(world: World, text: str) -> None:
    before = world.counts()
    response = world.api.request("POST", f"/api/tickets/{world.ticket}/messages",
                                 token=world.token("client"), json={"message": text})
    assert response.status_code == 422, response.text

    async def run() -> Any:
        socket = SocketClient(world.url, world.token("client"))
        await socket.connect()
        try:
            return await socket.call("send-message", {"ticketId": world.ticket, "message": text})
        finally:
            await socket.close()

    ack = asyncio.run(run())
    assert ack["ok"] is False, ack
    assert ack["error"]["code"] in {"invalid_argument", "invalid_message"}, ack
    assert world.counts() == before


def test_an_unknown_event_with_an_ack_gets_unknown_event(world: World) -> None:
    async def run() -> Any:
        socket = SocketClient(world.url, world.token("client"))
        await socket.connect()
        try:
            return await socket.call("delete-everything", {"x": 1}, timeout=5)
        finally:
            await socket.close()

    ack = asyncio.run(run())
    assert ack == {"ok": False, "error": {"code": "unknown_event",
                                          "message": "unknown event 'delete-everything'"}}


def test_typing_start_names_the_user_from_the_server_record(world: World) -> None:
    async def run() -> list[Any]:
        tech = SocketClient(world.url, world.token("technician"))
        client = SocketClient(world.url, world.token("client"))
        await tech.connect()
        await client.connect()
        try:
            assert (await tech.call("join-ticket", world.ticket))["ok"]
            ack = await client.call("typing-start", {"ticketId": world.ticket,
                                                     "userName": "The Admin"})
            assert ack["ok"], ack
            return [e.payload for e in await tech.wait_count("user-typing", 1)]
        finally:
            await tech.close()
            await client.close()

    [typing] = asyncio.run(run())
    assert typing["userId"] == world.ids["client"]
    assert typing["userName"] == "client"  # the name the user was created with


@pytest.mark.parametrize("sub", ["002", "\u0662", "+2", " 2", "2 ", "0"])
def test_a_token_whose_sub_is_not_a_canonical_integer_is_refused(
    world: World, sub: str
) -> None:
    response = world.api.request("GET", f"/api/streams/user-{world.ids['client']}/events",
                                 token=token(sub, "client", "client@world.test"))
    assert response.status_code == 401, response.text


def test_a_polling_post_over_the_frame_limit_is_answered_413_promptly(world: World) -> None:
    with httpx.Client(base_url=world.url, timeout=5) as http:
        opened = http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        sid = json.loads(opened.text[1:])["sid"]
        response = http.post("/socket.io/", params={"EIO": "4", "transport": "polling",
                                                    "sid": sid},
                             content=b"4" + b"x" * 1_200_000,
                             headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert response.status_code == 413
