"""The inbox at 100,000 notifications: mark-all-read and GET /api/inbox (issue 18).

`python -m bench.inbox_bench [--notifications 100000] [--reps 5]`, on its own PostgreSQL
database and a real web node (`python -m app.web`). One client user gets N
notifications, 90 % on their own stream and 10 % on the `clients` role stream (written
in bulk, as already relayed; then ANALYZE, as autovacuum would). Each repetition first
makes every item unread again (the user's watermarks back to 0), then times, each a
median over the repetitions:

- GET /api/inbox?limit=50 (state=all, then state=unread) with N unread items: the page
  and the counts (each count stops at 1,000: 999 with countsCapped);
- POST /api/inbox/read {"all": true} with N unread items (the watermarks rise to the
  heads; it writes its inbox-updated event in the same transaction);
- GET /api/inbox?state=unread right after it (nothing unread: the watermark answers);
- POST /api/inbox/read with one id (an explicit row; the counts after it);
- inbox.mark(all read) in this process (the transaction alone, no HTTP);
- for reference, GET /api/inbox and mark-all-read of a technician with an empty inbox
  (the same round trips, nothing to count): the difference is what 100,000 items cost.

The HTTP client is http.client on one keep-alive connection.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
import uuid
from urllib.parse import urlsplit

from sqlalchemy import delete, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_session_factory
from app.core.migrate import upgrade
from app.portal import inbox, projects
from app.portal.auth import Principal
from app.portal.inbox_tables import InboxCursor, InboxItem
from bench import (
    env,  # noqa: F401  (isolates this run's channels, queue, secret)
    fixtures,
    infra,
    teardown,
)
from bench.stats import Figure, Report, median
from testkit.clients import token

SECTION = "inbox"


def _prepare(factory: sessionmaker[Session], n: int) -> tuple[int, list[str]]:
    with factory() as session, session.begin():
        user = projects.create_user(session, email=f"inbox-{uuid.uuid4().hex[:8]}@bench",
                                    role="client", name="bench")
        uid = int(user.id)
    own = int(n * 0.9)
    items = [(f"user-{uid}" if i < own else "clients", "notification",
              {"type": "info", "title": f"Update {i}",
               "message": f"Ticket {i % 97}: a technician answered your message."})
             for i in range(n)]
    fixtures.bulk_write(factory, items)
    fixtures.mark_dispatched(factory, [f"user-{uid}", "clients"])
    with factory() as session, session.begin():  # what autovacuum does after a bulk load
        session.execute(text("ANALYZE"))
    return uid, [f"user-{uid}", "clients"]


def _reset(factory: sessionmaker[Session], uid: int) -> None:
    with factory() as session, session.begin():
        session.execute(update(InboxCursor).where(InboxCursor.user_id == uid)
                        .values(read_through=0, seen_through=0))
        session.execute(delete(InboxItem).where(InboxItem.user_id == uid))


class Client:
    def __init__(self, url: str, tok: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
        self.headers = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: object = None) -> tuple[float, object]:
        data = None if body is None else json.dumps(body).encode()
        started = time.perf_counter()
        self.conn.request(method, path, body=data, headers=self.headers)
        response = self.conn.getresponse()
        raw = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {raw[:200]!r}")
        return elapsed, json.loads(raw)


def measure(report: Report, factory: sessionmaker[Session], web_url: str, n: int,
            reps: int) -> None:
    uid, _streams = _prepare(factory, n)
    client = Client(web_url, token(uid, "client", f"u{uid}@bench"))
    who = Principal(str(uid), f"u{uid}@bench", "client")
    with factory() as session, session.begin():
        empty = projects.create_user(session, email=f"empty-{uuid.uuid4().hex[:8]}@bench",
                                     role="technician", name="bench").id
    nobody = Client(web_url, token(empty, "technician", f"u{empty}@bench"))
    runs: dict[str, list[float]] = {k: [] for k in (
        "get_all", "get_unread", "mark_all", "get_after", "mark_one", "mark_all_domain",
        "get_empty", "mark_empty")}
    client.call("GET", "/api/inbox?limit=50")  # warm: connection, caches
    for _ in range(reps):
        _reset(factory, uid)
        ms, body = client.call("GET", "/api/inbox?limit=50")
        runs["get_all"].append(ms)
        assert body["counts"]["countsCapped"] is True, body  # type: ignore[index]
        ms, body = client.call("GET", "/api/inbox?state=unread&limit=50")
        runs["get_unread"].append(ms)
        newest = body["items"][0]["id"]  # type: ignore[index]
        ms, body = client.call("POST", "/api/inbox/read", {"all": True})
        runs["mark_all"].append(ms)
        assert body["counts"]["unread"] == 0, body  # type: ignore[index]
        ms, _ = client.call("GET", "/api/inbox?state=unread&limit=50")
        runs["get_after"].append(ms)
        ms, _ = client.call("POST", "/api/inbox/unread", {"ids": [newest]})
        runs["mark_one"].append(ms)
        _reset(factory, uid)
        started = time.perf_counter()
        with factory() as session, session.begin():
            inbox.mark(session, who, inbox.Change("read", (), True))
        runs["mark_all_domain"].append((time.perf_counter() - started) * 1000)
        runs["get_empty"].append(nobody.call("GET", "/api/inbox?limit=50")[0])
        runs["mark_empty"].append(nobody.call("POST", "/api/inbox/read", {"all": True})[0])

    def add(key: str, name: str) -> None:
        report.add(Figure(SECTION, name, median(runs[key]), "ms", runs[key]))

    add("get_all", f"GET /api/inbox?limit=50, {n:,} unread")
    add("get_unread", f"GET /api/inbox?state=unread&limit=50, {n:,} unread")
    add("mark_all", f"POST /api/inbox/read all, {n:,} unread")
    add("get_after", "GET /api/inbox?state=unread after mark-all")
    add("mark_one", "POST /api/inbox/unread one id, then")
    add("mark_all_domain", f"inbox.mark(all read) in-process, {n:,} unread")
    add("get_empty", "(reference) GET /api/inbox?limit=50, empty inbox")
    add("mark_empty", "(reference) POST /api/inbox/read all, empty inbox")


def run(n: int, reps: int) -> Report:
    infra.check_services()
    url = infra.create_database()
    report = Report()
    web = infra.WebNode({"DATABASE_URL": url})
    try:
        infra.start_all(web, meanwhile=lambda: upgrade(url))
        engine = make_engine(url)
        try:
            load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            report.section(f"Inbox: one client user with {n:,} notifications (90 % own "
                           f"stream, 10 % role stream), median of {reps}; load average {load}")
            measure(report, make_session_factory(engine), web.url, n, reps)
        finally:
            engine.dispose()
    finally:
        infra.stop_all(web)
        infra.drop_database(url)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inbox_bench")
    parser.add_argument("--notifications", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    teardown.on_signals()  # SIGTERM, Ctrl-C: what the run started removed (bench/teardown.py)
    try:
        run(args.notifications, args.reps)
    except infra.Unavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        teardown.clean()  # what the run left, its Redis keys included
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
