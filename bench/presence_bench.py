"""Presence after a web node is killed (issue 18): how long until the others say it left.

`python -m bench.presence_bench [--ttl 2,5,10] [--reps 3]`, on its own PostgreSQL database,
with real web nodes (`python -m app.web`) whose HERALD_PRESENCE_TTL is each value in turn.
A watcher (admin) on node A and a client on node B are in one ticket room; node B is killed
with SIGKILL; the figure is the time from the kill to the watcher's `presence-leave`
(bounded by design by the TTL: liveness keys live 0.6 TTL, nodes beat and sweep every
0.2 TTL). Node A stays up for a TTL's repetitions; node B is started again for each.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_session_factory
from app.core.migrate import upgrade
from app.portal import projects
from bench import (
    env,  # noqa: F401  (isolates this run's channels, queue, secret)
    infra,
    teardown,
)
from bench.stats import median
from testkit.clients import SocketClient, token


def _room(factory: sessionmaker[Session]) -> tuple[str, str, int, int]:
    """(admin token, client token, client id, ticket id) of a new project's ticket."""
    tag = uuid.uuid4().hex[:8]
    with factory() as session, session.begin():
        admin = projects.create_user(session, email=f"a-{tag}@bench", role="admin", name="a")
        client = projects.create_user(session, email=f"c-{tag}@bench", role="client", name="c")
        session.flush()
        project = projects.create_project(session, name="P", client_id=client.id,
                                          technician_ids=[])
        ticket = projects.create_ticket(session, project_id=project.id, subject="S",
                                        priority="normal")
        return (token(admin.id, "admin", admin.email), token(client.id, "client", client.email),
                int(client.id), int(ticket.id))


async def _once(watch_url: str, victim: infra.WebNode, room: tuple[str, str, int, int],
                ttl: float) -> float:
    admin_tok, client_tok, client_id, ticket = room
    watcher = SocketClient(watch_url, admin_tok)
    gone = SocketClient(victim.url, client_tok)
    await watcher.connect()
    await gone.connect()
    await watcher.call("join-ticket", ticket)
    await gone.call("join-ticket", ticket)

    def left() -> bool:
        return any(e.payload.get("userId") == client_id for e in watcher.named("presence-leave"))
    await watcher.wait_for(lambda: bool(watcher.named("presence-join")))
    killed = time.perf_counter()
    victim.kill()
    await watcher.wait_for(left, timeout=ttl * 5 + 10)
    took = time.perf_counter() - killed
    await watcher.close()
    await gone.sio.eio.disconnect(abort=True)
    return took


def run(ttls: list[float], reps: int) -> list[str]:
    infra.check_services()
    url = infra.create_database()
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    lines = []
    try:
        for ttl in ttls:
            env = {"DATABASE_URL": url, "HERALD_PRESENCE_TTL": str(ttl)}
            watch = infra.WebNode(env)
            infra.start_all(watch)
            try:
                times = []
                for _ in range(reps):
                    victim = infra.WebNode(env)
                    infra.start_all(victim)
                    times.append(asyncio.run(_once(watch.url, victim, _room(factory), ttl)))
                lines.append(f"presence-leave after SIGKILL, HERALD_PRESENCE_TTL={ttl:g} s: "
                             f"median {median(times):.2f} s, max {max(times):.2f} s "
                             f"({', '.join(f'{t:.2f}' for t in times)})")
                print(lines[-1], flush=True)
            finally:
                infra.stop_all(watch)
    finally:
        engine.dispose()
        infra.drop_database(url)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.presence_bench")
    parser.add_argument("--ttl", default="2,5,10", help="comma-separated TTLs in seconds")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    teardown.on_signals()  # SIGTERM, Ctrl-C: what the run started removed (bench/teardown.py)
    try:
        run([float(t) for t in args.ttl.split(",")], args.reps)
    except infra.Unavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        teardown.clean()  # what the run left, its Redis keys included
    return 0


if __name__ == "__main__":
    sys.exit(main())
