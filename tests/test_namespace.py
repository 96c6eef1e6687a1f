"""HERALD_NAMESPACE: two deployments on one Redis never see each other."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_lib

from app.core.settings import Settings
from app.outbox.meter import counters_key
from app.outbox.nudge import wake_key
from testkit.clients import Api, SocketClient, token
from testkit.databases import drop_pg_database, migrated_pg_database, require_pg
from testkit.processes import WebNode, Worker
from testkit.system import make_admin

# No explicit channel or queue: the names come from the namespace (testkit's run-wide
# HERALD_SOCKETIO_CHANNEL and HERALD_CELERY_QUEUE are the explicit form, cleared here).
DERIVED = {"HERALD_SOCKETIO_CHANNEL": "", "HERALD_CELERY_QUEUE": "",
           "HERALD_NAMESPACE": ""}


def derived(url: str, **kw: str) -> Settings:
    return Settings(database_url=url, socketio_channel="", celery_queue="",
                    **{"namespace": "", **kw})


def test_the_default_namespace_comes_from_the_database_and_prefixes_every_name(
        tmp_path: Path) -> None:
    a = derived("postgresql+psycopg://u@db-host:5432/portal_a")
    b = derived("postgresql+psycopg://u@db-host:5432/portal_b")
    assert (a.namespace, b.namespace) == ("portal_a", "portal_b")
    # every process of a deployment agrees, whatever host name it uses for the database
    assert derived("postgresql://other@10.0.0.7/portal_a").namespace == "portal_a"
    for s in (a, b):
        names = [s.socketio_channel, s.celery_queue, counters_key(s.socketio_channel),
                 wake_key(s.celery_queue)]
        # a key may open with a Redis Cluster hash tag around its channel: `{<ns>:…}:…`
        assert all(name.lstrip("{").startswith(f"{s.namespace}:") for name in names), names
    assert len({a.socketio_channel, b.socketio_channel}) == 2
    assert len({a.celery_queue, b.celery_queue}) == 2
    # two checkouts' SQLite files of the same name are two deployments
    one = derived(f"sqlite:///{tmp_path / 'one' / 'herald.db'}")
    two = derived(f"sqlite:///{tmp_path / 'two' / 'herald.db'}")
    assert one.namespace != two.namespace and one.namespace.startswith("herald-")


def test_an_explicit_namespace_channel_or_queue_is_used_as_given() -> None:
    url = "postgresql+psycopg://u@h/portal"
    assert derived(url, namespace="acme").socketio_channel == "acme:socketio"
    explicit = Settings(database_url=url, namespace="acme", socketio_channel="socketio",
                        celery_queue="herald")
    assert (explicit.socketio_channel, explicit.celery_queue) == ("socketio", "herald")
    with pytest.raises(ValueError):
        Settings(database_url=url, namespace="no spaces: here")


@dataclass
class Deployment:
    url: str
    settings: Settings
    web: WebNode
    worker: Worker
    api: Api


def _deploy(suffix: str, tmp_path: Path) -> Deployment:
    from app.core.db import make_engine, make_session_factory

    url = migrated_pg_database(suffix)
    engine = make_engine(url)
    admin = make_admin(make_session_factory(engine))
    engine.dispose()
    settings = derived(url)
    env = {**DERIVED, "DATABASE_URL": url}
    web = WebNode(env, tmp_path)
    worker = Worker(env, tmp_path, queue=settings.celery_queue)
    web.spawn()
    worker.spawn()
    return Deployment(url, settings, web, worker, Api(web.url, admin))


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Deployment, Deployment]]:
    require_pg()
    pair = [_deploy("_ns_a", tmp_path), _deploy("_ns_b", tmp_path)]
    try:
        for d in pair:
            d.web.wait_ready()
            d.worker.wait_ready()
        yield pair[0], pair[1]
    finally:
        for d in pair:
            d.api.close()
            d.web.stop()
            d.worker.stop()
            drop_pg_database(d.url)


def _ticket(api: Api) -> tuple[int, dict[str, str]]:
    client, client_token = api.user("client", "client@ns.test")
    tech, tech_token = api.user("technician", "tech@ns.test")
    ticket = api.ticket(api.project(client, [tech]))
    return ticket, {"client": client_token, "technician": tech_token}


@pytest.mark.anyio
async def test_two_deployments_on_one_redis_do_not_see_each_others_typing_or_events(
        two: tuple[Deployment, Deployment], redis_url: str) -> None:
    a, b = two
    assert a.settings.namespace != b.settings.namespace
    ticket, tokens_a = _ticket(a.api)
    ticket_b, tokens_b = _ticket(b.api)
    assert ticket == ticket_b  # the same room name in both: only the namespace parts them
    sender = SocketClient(a.web.url, tokens_a["client"])
    peer_a = SocketClient(a.web.url, tokens_a["technician"])
    peer_b = SocketClient(b.web.url, tokens_b["technician"])
    sockets = [sender, peer_a, peer_b]
    await asyncio.gather(*(s.connect() for s in sockets))
    try:
        for s in sockets:
            assert (await s.call("join-ticket", ticket))["ok"] is True
        with redis_lib.Redis.from_url(redis_url) as client:
            listening = {c.decode() for c in client.pubsub_channels()}
        assert {a.settings.socketio_channel, b.settings.socketio_channel} <= listening

        await sender.call("typing-start", {"ticketId": ticket, "userName": "Ann"})
        service = token("billing", "service", "billing@ns.test")
        for d, tag in ((a, "for-a"), (b, "for-b")):
            d.api.ok("POST", "/api/events", service, json={
                "stream": f"ticket-{ticket}", "type": "invoice-issued", "data": {"tag": tag}})
        await peer_a.wait_count("user-typing", 1)
        got_a = await peer_a.wait_count("invoice-issued", 1)
        got_b = await peer_b.wait_count("invoice-issued", 1)
        # Sentinels, one per deployment, published after both events were delivered: if a
        # node listened to the other's channels, the other's event would reach it first.
        for d, tag in ((a, "end-a"), (b, "end-b")):
            d.api.ok("POST", "/api/events", service, json={
                "stream": f"ticket-{ticket}", "type": "invoice-issued", "data": {"tag": tag}})
        await peer_a.wait_count("invoice-issued", 2)
        await peer_b.wait_count("invoice-issued", 2)
        assert [e.payload for e in peer_a.named("invoice-issued")] == [
            {"tag": "for-a"}, {"tag": "end-a"}]
        assert [e.payload for e in peer_b.named("invoice-issued")] == [
            {"tag": "for-b"}, {"tag": "end-b"}]
        assert got_a[0].payload == {"tag": "for-a"} and got_b[0].payload == {"tag": "for-b"}
        assert peer_b.named("user-typing") == []
    finally:
        await asyncio.gather(*(s.close() for s in sockets))
