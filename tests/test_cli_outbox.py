"""`herald outbox …` as operators run it: a real subprocess on the real database."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import redis as redis_lib
from sqlalchemy import select, update

from app.cli.main import main
from app.cli.outbox import duration_words
from app.core.db import utcnow
from app.core.settings import Settings
from app.outbox import liveness, ops, writer
from app.outbox.meter import RelayMeter
from app.outbox.tables import Event, RelayCursor
from testkit.databases import Database
from testkit.ops import herald, herald_json
from testkit.processes import free_port


def _backlog(db: Database) -> None:
    """user-1: 3 events, 1 published; user-2: 2 events, failed after 8 attempts."""
    with db.factory() as session, session.begin():
        for stream, n in (("user-1", 3), ("user-2", 2)):
            for i in range(n):
                writer.append(session, stream, "notification",
                              {"type": "info", "title": f"#{i}", "message": "m"})
    with db.factory() as session, session.begin():
        session.execute(update(RelayCursor).where(RelayCursor.stream == "user-1")
                        .values(dispatched=1))
        session.execute(update(RelayCursor).where(RelayCursor.stream == "user-2").values(
            state="failed", attempts=8, last_error="ResponseError: OOM command not allowed",
            failed_at=utcnow() - timedelta(minutes=5)))


def test_status_reports_pending_failed_and_lag_as_json_and_as_a_table(pg_db: Database) -> None:
    _backlog(pg_db)
    with ThreadPoolExecutor(2) as pool:  # two real processes, side by side
        as_json = pool.submit(herald_json, "outbox", "status", database_url=pg_db.url)
        as_table = pool.submit(herald, "outbox", "status", database_url=pg_db.url)
        state, table = as_json.result(), as_table.result()
    assert (state["eventsPending"], state["streamsBehind"], state["failedStreams"]) == (4, 2, 1)
    assert state["oldestPendingAgeSeconds"] >= 0
    assert {s["stream"]: (s["pending"], s["state"]) for s in state["streams"]} == {
        "user-1": (2, "active"), "user-2": (2, "failed")}
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["events", "pending", "4"]
    assert "failed streams    1" in table.stdout
    [user2] = [line for line in lines if line.startswith("user-2 ")]
    assert user2.split()[:6] == ["user-2", "failed", "2", "0", "2", "8"]


def test_failed_lists_the_stream_then_retry_gives_it_back_to_the_relay(pg_db: Database) -> None:
    _backlog(pg_db)
    [row] = herald_json("outbox", "failed", database_url=pg_db.url)["streams"]
    assert (row["stream"], row["attempts"], row["pending"]) == ("user-2", 8, 2)
    assert row["lastError"] == "ResponseError: OOM command not allowed"
    assert row["failedAt"].endswith("Z")

    assert herald_json("outbox", "retry", "user-2", database_url=pg_db.url) == {
        "retried": ["user-2"], "healthy": []}
    with pg_db.factory() as session:
        cursor = session.get(RelayCursor, "user-2")
        assert cursor is not None
        assert (cursor.state, cursor.attempts, cursor.next_attempt_at) == ("active", 0, None)
        assert ops.failed(session) == []


def test_prune_drops_only_published_events(pg_db: Database) -> None:
    _backlog(pg_db)
    assert herald_json("outbox", "prune", "--older-than", "0s",
                       database_url=pg_db.url)["pruned"] == 1
    with pg_db.factory() as session:
        assert session.scalars(select(Event.stream).order_by(Event.stream, Event.offset)
                               ).all() == ["user-1", "user-1", "user-2", "user-2"]
        assert ops.status(session).events_pending == 4


def test_exit_codes_are_2_for_bad_usage_and_1_for_failures(pg_db: Database) -> None:
    _backlog(pg_db)
    runs = {
        "usage": (("outbox", "retry"), pg_db.url),
        "unknown": (("outbox", "retry", "user-404"), pg_db.url),
        "down": (("outbox", "status"), "postgresql+psycopg://postgres@127.0.0.1:1/x"),
    }
    with ThreadPoolExecutor(len(runs)) as pool:  # three real processes, side by side
        futures = {name: pool.submit(herald, *argv, database_url=url)
                   for name, (argv, url) in runs.items()}
        usage, unknown, down = (futures[name].result() for name in runs)
    assert usage.returncode == 2 and usage.stderr.strip().startswith("herald:")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "herald: no such stream: user-404"
    assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1
    assert "Traceback" not in down.stderr


@pytest.mark.parametrize("argv", [
    ["outbox"], ["outbox", "frobnicate"], ["outbox", "retry", "user-1", "--all"],
    ["outbox", "retry", "not-a-stream"], ["outbox", "prune", "--older-than", "soon"],
    ["tail"], ["tail", "user-1"], ["tail", "user-1", "--token", "t", "--user", "1"],
    ["tail", "bogus", "--token", "t"], ["tail", "user-1", "--token", "t", "--from", "-1"],
])
def test_bad_usage_exits_2_before_touching_anything(argv: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().out == ""


LONG_ERROR = ("ResponseError: NOPERM User default has no permissions to run the 'publish' "
              "command; the ACL of the Socket.IO Redis refuses this client\n"
              "second line of the error, kept too")


def test_status_and_failed_tables_show_the_last_error_whole(pg_db: Database) -> None:
    _backlog(pg_db)
    with pg_db.factory() as session, session.begin():
        session.execute(update(RelayCursor).where(RelayCursor.stream == "user-2")
                        .values(last_error=LONG_ERROR))
    for command in ("status", "failed"):
        table = herald("outbox", command, database_url=pg_db.url)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        [at] = [i for i, line in enumerate(lines) if line.startswith("user-2 ")]
        first, second = LONG_ERROR.splitlines()
        assert lines[at].endswith(first)
        # the error's second line goes on under the LAST ERROR column
        column = next(line for line in lines if "LAST ERROR" in line).index("LAST ERROR")
        assert lines[at + 1] == " " * column + second


def test_status_filter_lists_streams_by_name_or_error(pg_db: Database) -> None:
    _backlog(pg_db)
    by_error = herald_json("outbox", "status", "--filter", "oom", database_url=pg_db.url)
    assert [s["stream"] for s in by_error["streams"]] == ["user-2"]
    assert by_error["eventsPending"] == 4  # totals stay over every stream
    by_name = herald_json("outbox", "status", "--filter", "USER-1", database_url=pg_db.url)
    assert [s["stream"] for s in by_name["streams"]] == ["user-1"]


def test_retry_of_a_healthy_stream_says_so_and_changes_nothing(pg_db: Database) -> None:
    _backlog(pg_db)
    done = herald("outbox", "retry", "user-1", database_url=pg_db.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "already healthy, left unchanged: user-1"
    assert herald_json("outbox", "retry", "user-1", "user-2", database_url=pg_db.url) == {
        "retried": ["user-2"], "healthy": ["user-1"]}
    with pg_db.factory() as session:
        cursor = session.get(RelayCursor, "user-1")
        assert cursor is not None and (cursor.state, cursor.dispatched) == ("active", 1)


def test_retry_all_of_many_streams_names_the_first_twenty_and_counts_the_rest(
        pg_db: Database) -> None:
    names = sorted(f"user-{k}" for k in range(1, 26))  # as the retry lists them
    with pg_db.factory() as session, session.begin():
        for name in names:
            writer.append(session, name, "notification", {"type": "info", "title": "t",
                                                          "message": "m"})
        session.execute(update(RelayCursor).values(state="failed", attempts=8,
                                                   failed_at=utcnow()))
    done = herald("outbox", "retry", "--all", database_url=pg_db.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"retried 25 stream(s): {', '.join(names[:20])} "
                                   "and 5 more (--json lists them all)")
    with pg_db.factory() as session:
        assert ops.failed(session) == []


def test_prune_says_how_old_and_its_dry_run_deletes_nothing(pg_db: Database) -> None:
    _backlog(pg_db)
    done = herald("outbox", "prune", database_url=pg_db.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pruned 0 published event(s) older than 7 days"
    dry = herald("outbox", "prune", "--older-than", "0s", "--dry-run", database_url=pg_db.url)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would prune 1 published event(s) in 1 stream(s) older than "
                                 "0 seconds")
    assert dry.stdout.strip().endswith("nothing deleted")
    assert herald_json("outbox", "prune", "--older-than", "36h", "--dry-run",
                       database_url=pg_db.url)["wouldPrune"] == 0
    with pg_db.factory() as session:
        assert len(session.scalars(select(Event.id)).all()) == 5


@pytest.mark.parametrize(("span", "words"), [
    (timedelta(days=7), "7 days"), (timedelta(days=1, hours=12), "1 day 12 hours"),
    (timedelta(minutes=30), "30 minutes"), (timedelta(seconds=1), "1 second"),
    (timedelta(seconds=90), "1 minute 30 seconds"), (timedelta(0), "0 seconds"),
])
def test_durations_read_as_words(span: timedelta, words: str) -> None:
    assert duration_words(span) == words


def test_show_prints_a_streams_cursor_error_and_events(pg_db: Database) -> None:
    _backlog(pg_db)
    shown = herald("outbox", "show", "user-2", database_url=pg_db.url)
    assert shown.returncode == 0, shown.stderr
    assert "state             failed" in shown.stdout
    assert "  ResponseError: OOM command not allowed" in shown.stdout
    assert '"title": "#1"' in shown.stdout
    detail = herald_json("outbox", "show", "user-1", "--events", "1", database_url=pg_db.url)
    assert (detail["head"], detail["dispatched"], detail["pending"]) == (3, 1, 2)
    assert [e["offset"] for e in detail["events"]] == [3]
    missing = herald("outbox", "show", "user-404", database_url=pg_db.url)
    assert missing.returncode == 1 and missing.stderr.strip() == "herald: no such stream: user-404"


def test_nodes_lists_the_heartbeats_in_redis(pg_db: Database, redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    beats = liveness.Heartbeats(client, Settings().socketio_channel)
    try:
        beats.beat("worker", "cli-test:1", {"queue": "q", "relayThread": True,
                                            "lastSweepAt": time.time() - 2}, ttl=30)
        listed = herald_json("nodes", database_url=pg_db.url)
        [ours] = [w for w in listed["workers"] if w["id"] == "cli-test:1"]
        assert 1.5 < ours["sweepAgeSeconds"] < 30
        table = herald("nodes", database_url=pg_db.url)
        assert any(line.startswith("cli-test:1 ") and "alive" in line
                   for line in table.stdout.splitlines())
    finally:
        beats.gone("worker", "cli-test:1")
        client.close()


def test_nodes_without_redis_fails_with_one_line(pg_db: Database) -> None:
    done = herald("nodes", database_url=pg_db.url,
                  env={"SOCKETIO_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("herald: ") and "Traceback" not in done.stderr


def test_rate_sums_what_the_relay_counted_per_minute(pg_db: Database, redis_url: str) -> None:
    channel = f"{Settings().socketio_channel}-rate-{time.time_ns()}"
    client = redis_lib.Redis.from_url(redis_url)
    try:
        meter = RelayMeter(client, channel=channel)
        meter.published([object()] * 7)
        done = herald("outbox", "rate", "--json", database_url=pg_db.url,
                      env={"HERALD_SOCKETIO_CHANNEL": channel})
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert data["published"] == 7 and len(data["samples"]) == 90
        table = herald("outbox", "rate", database_url=pg_db.url,
                       env={"HERALD_SOCKETIO_CHANNEL": channel})
        assert table.stdout.startswith("published in the last 15 minutes: 7 ")
        assert any(line.split()[1:3] == ["7", "0"] for line in table.stdout.splitlines()[3:])
    finally:
        client.close()
