"""Backend services publish: POST /api/events (one or a batch) and app.outbox.publish in-process."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.outbox.publish import EventSpec, publish, publish_many
from app.outbox.tables import Event, IdempotencyKey, Stream
from app.portal.models import Project, User
from testkit.clients import SocketClient, token
from testkit.databases import Database
from testkit.world import World


def _post(world: World, body: Any, service: str = "billing") -> httpx.Response:
    tok = world.token("service") if service == "billing" else token(service, "service")
    response: httpx.Response = world.api.request("POST", "/api/events", tok, json=body)
    return response


def _stream_events(world: World, stream: str) -> list[Event]:
    with world.system.factory() as session:
        return list(session.scalars(select(Event).where(Event.stream == stream)
                                    .order_by(Event.offset)))


def _new_stream(world: World) -> str:
    return f"ticket-{world.fresh_ticket()}"


def test_one_event_answers_201_with_id_stream_and_offset(world: World) -> None:
    stream = _new_stream(world)
    response = _post(world, {"stream": stream, "type": "invoice-issued", "data": {"n": 1}})
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"], "stream": stream, "offset": 1, "duplicate": False}
    [stored] = _stream_events(world, stream)
    assert (stored.id, stored.type, stored.payload) == (body["id"], "invoice-issued", {"n": 1})


@pytest.mark.anyio
async def test_batch_reaches_a_joined_socket_in_offset_order(world: World) -> None:
    ticket = world.fresh_ticket()
    socket = SocketClient(world.url, world.token("client"))
    await socket.connect()
    try:
        assert (await socket.call("join-ticket", ticket))["ok"] is True
        batch = [{"stream": f"ticket-{ticket}", "type": "step", "data": {"i": i}}
                 for i in range(50)]
        assert _post(world, batch).status_code == 201
        received = await socket.wait_count("step", 50)
        assert [e.payload["i"] for e in received] == list(range(50))
        assert [e.meta["offset"] for e in received if e.meta] == list(range(1, 51))
    finally:
        await socket.close()


def test_batch_lands_in_order_with_consecutive_offsets(world: World) -> None:
    a, b = _new_stream(world), _new_stream(world)
    batch = [{"stream": a if i % 3 else b, "type": "step", "data": {"i": i}} for i in range(30)]
    response = _post(world, batch)
    assert response.status_code == 201
    answers = response.json()
    assert [x["stream"] for x in answers] == [e["stream"] for e in batch]
    for stream in (a, b):
        stored = _stream_events(world, stream)
        expected = [e["data"]["i"] for e in batch if e["stream"] == stream]
        assert [e.payload["i"] for e in stored] == expected
        assert [e.offset for e in stored] == list(range(1, len(expected) + 1))
        assert [x["offset"] for x in answers if x["stream"] == stream] == \
            list(range(1, len(expected) + 1))


BAD_ITEMS = {
    "unknown-stream": ({"stream": "room-1", "type": "x", "data": {}}, 422, "invalid_stream"),
    "stream-id-zero": ({"stream": "user-0", "type": "x", "data": {}}, 422, "invalid_stream"),
    "upper-case-type": ({"stream": "clients", "type": "Bad-Type", "data": {}}, 422,
                        "invalid_type"),
    "type-with-space": ({"stream": "clients", "type": "a b", "data": {}}, 422, "invalid_type"),
    "data-not-object": ({"stream": "clients", "type": "x", "data": [1]}, 422, "invalid"),
    "data-over-64k": ({"stream": "clients", "type": "x", "data": {"b": "x" * 65_536}}, 413,
                      "too_large"),
    "empty-key": ({"stream": "clients", "type": "x", "data": {}, "idempotencyKey": ""}, 422,
                  "invalid_idempotency_key"),
    "unknown-field": ({"stream": "clients", "type": "x", "data": {}, "room": "a"}, 422,
                      "invalid"),
    "missing-type": ({"stream": "clients", "data": {}}, 422, "invalid"),
    "notification-shape": ({"stream": "clients", "type": "notification",
                            "data": {"type": "fatal", "title": "x", "message": ""}}, 422,
                           "invalid_notification"),
}


@pytest.mark.parametrize("bad", list(BAD_ITEMS))
def test_bad_item_in_the_middle_of_a_batch_stores_nothing(world: World, bad: str) -> None:
    item, status, code = BAD_ITEMS[bad]
    stream = _new_stream(world)
    good = {"stream": stream, "type": "ok", "data": {}, "idempotencyKey": uuid.uuid4().hex}
    before = world.counts()
    response = _post(world, [good, good | {"idempotencyKey": uuid.uuid4().hex}, item, good])
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert world.counts() == before
    with world.system.factory() as session:
        assert session.get(Stream, stream) is not None
        assert session.get(Stream, stream).head == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", list(BAD_ITEMS))
def test_bad_single_event_is_refused_with_its_code(world: World, bad: str) -> None:
    item, status, code = BAD_ITEMS[bad]
    before = world.counts()
    response = _post(world, item)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert world.counts() == before


def test_service_notification_in_spec_shape_is_stored(world: World) -> None:
    user = world.ids["client"]
    response = _post(world, {"stream": f"user-{user}", "type": "notification",
                             "data": {"type": "success", "title": "Paid", "message": "Thanks"}})
    assert response.status_code == 201, response.text


def test_data_of_exactly_64_kib_is_accepted(world: World) -> None:
    filler = 65_536 - len('{"b":""}')
    response = _post(world, {"stream": "admins", "type": "x", "data": {"b": "x" * filler}})
    assert response.status_code == 201, response.text


def test_more_than_1000_events_is_413_and_stores_nothing(world: World) -> None:
    before = world.counts()
    response = _post(world, [{"stream": "admins", "type": "x", "data": {}}] * 1001)
    assert (response.status_code, response.json()["error"]["code"]) == (413, "too_large")
    assert world.counts() == before


def test_1000_events_in_one_batch_land_together(world: World) -> None:
    stream = _new_stream(world)
    response = _post(world, [{"stream": stream, "type": "x", "data": {"i": i}}
                             for i in range(1000)])
    assert response.status_code == 201
    assert [e.offset for e in _stream_events(world, stream)] == list(range(1, 1001))


@pytest.mark.parametrize("body", [[], "text", 42, None, {"events": []}])
def test_body_that_is_no_event_nor_list_is_422(world: World, body: Any) -> None:
    before = world.counts()
    response = _post(world, body)
    assert response.status_code == 422
    assert world.counts() == before


def test_nan_in_data_is_422(world: World) -> None:
    response = world.api.request(
        "POST", "/api/events", world.token("service"),
        content=b'{"stream": "admins", "type": "x", "data": {"v": NaN}}',
        headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_data")


def test_repeated_idempotency_key_appends_once_and_answers_the_first_event(world: World
                                                                          ) -> None:
    stream = _new_stream(world)
    body = {"stream": stream, "type": "paid", "data": {"v": 1}, "idempotencyKey": "pay-1"}
    first = _post(world, body)
    again = _post(world, body | {"data": {"v": 2}})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json() | {"duplicate": True}
    assert [e.payload for e in _stream_events(world, stream)] == [{"v": 1}]


def test_idempotency_keys_are_per_service(world: World) -> None:
    stream = _new_stream(world)
    body = {"stream": stream, "type": "paid", "data": {}, "idempotencyKey": "k"}
    a = _post(world, body, service="billing").json()
    b = _post(world, body, service="crm").json()
    assert a["id"] != b["id"] and len(_stream_events(world, stream)) == 2


def test_repeated_key_inside_one_batch_appends_once(world: World) -> None:
    stream = _new_stream(world)
    item = {"stream": stream, "type": "x", "data": {}, "idempotencyKey": uuid.uuid4().hex}
    answers = _post(world, [item, item, {"stream": stream, "type": "y", "data": {}}]).json()
    assert answers[0]["id"] == answers[1]["id"] and answers[1]["duplicate"] is True
    assert [e.type for e in _stream_events(world, stream)] == ["x", "y"]


def test_racing_requests_with_one_idempotency_key_append_one_event(world: World) -> None:
    stream = _new_stream(world)
    key = uuid.uuid4().hex
    racers = 8
    barrier = threading.Barrier(racers)

    def post(i: int) -> dict[str, Any]:
        with httpx.Client(base_url=world.url, timeout=20) as http:
            barrier.wait()
            r = http.post("/api/events", json={"stream": stream, "type": "x", "data": {"i": i},
                                               "idempotencyKey": key},
                          headers={"Authorization": f"Bearer {world.token('service')}"})
            assert r.status_code in (200, 201), r.text
            result: dict[str, Any] = r.json()
            return result

    with ThreadPoolExecutor(racers) as pool:
        answers = list(pool.map(post, range(racers)))
    assert len({a["id"] for a in answers}) == 1
    assert sorted(a["duplicate"] for a in answers) == [False] + [True] * (racers - 1)
    assert len(_stream_events(world, stream)) == 1


# -- the Python API, inside the caller's own transaction -------------------------------------

def _client(database: Database) -> int:
    with database.factory() as session, session.begin():
        user = User(email=f"{uuid.uuid4().hex}@t", role="client")
        session.add(user)
        session.flush()
        return user.id


def test_publish_commits_with_the_callers_own_writes(db: Database) -> None:
    client = _client(db)
    with db.factory() as session, session.begin():
        project = Project(name="Roof", client_id=client)
        session.add(project)
        session.flush()
        published = publish(session, f"user-{client}", "project-opened",
                            {"projectId": project.id})
    with db.factory() as session:
        event = session.get(Event, published.event.id)
        assert event is not None and event.offset == 1 and published.created


def test_publish_rolls_back_with_the_callers_transaction(db: Database) -> None:
    client = _client(db)
    with pytest.raises(RuntimeError), db.factory() as session, session.begin():
        session.add(Project(name="Roof", client_id=client))
        publish(session, f"user-{client}", "project-opened", {},
                idempotency_key="open-1", service="crm")
        raise RuntimeError("the service's own write failed")
    with db.factory() as session:
        assert session.scalars(select(Event)).all() == []
        assert session.scalars(select(IdempotencyKey)).all() == []
    with db.factory() as session, session.begin():  # the key was never used
        assert publish(session, f"user-{client}", "project-opened", {},
                       idempotency_key="open-1", service="crm").created


def test_publish_many_refuses_an_invalid_item_before_writing(db: Database) -> None:
    from app.core.errors import InvalidInput

    with db.factory() as session, session.begin():
        with pytest.raises(InvalidInput):
            publish_many(session, [EventSpec("clients", "ok", {}),
                                   EventSpec("nowhere", "ok", {})])
        assert session.scalars(select(Event)).all() == []


def test_publish_with_a_key_needs_a_service_name(db: Database) -> None:
    from app.core.errors import InvalidInput

    with db.factory() as session, session.begin(), pytest.raises(InvalidInput):
        publish(session, "clients", "x", {}, idempotency_key="k")


def test_racing_transactions_with_one_key_publish_once_on_postgres(pg_db: Database) -> None:
    racers = 6
    barrier = threading.Barrier(racers)

    def run(i: int) -> tuple[str, bool]:
        with pg_db.factory() as session, session.begin():
            barrier.wait()
            p = publish(session, "admins", "x", {"i": i}, idempotency_key="same",
                        service="svc")
            return p.event.id, p.created

    with ThreadPoolExecutor(racers) as pool:
        results = list(pool.map(run, range(racers)))
    assert len({event_id for event_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * (racers - 1) + [True]
    with pg_db.factory() as session:
        assert len(session.scalars(select(Event)).all()) == 1


def test_batches_touching_streams_in_opposite_orders_never_deadlock(pg_db: Database) -> None:
    rounds = 15
    barrier = threading.Barrier(2)

    def run(order: tuple[str, str]) -> int:
        for _ in range(rounds):
            barrier.wait()
            with pg_db.factory() as session, session.begin():
                publish_many(session, [EventSpec(order[0], "x", {}), EventSpec(order[1], "x", {}),
                                       EventSpec(order[0], "y", {})])
        return rounds

    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(run, [("clients", "admins"), ("admins", "clients")]))
    assert done == [rounds, rounds]
    with pg_db.factory() as session:
        for stream in ("clients", "admins"):
            count = 3 * rounds
            offsets = session.scalars(select(Event.offset).where(Event.stream == stream)
                                      .order_by(Event.offset)).all()
            assert list(offsets) == list(range(1, count + 1))
