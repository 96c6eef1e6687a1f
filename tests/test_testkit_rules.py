"""The test kit's rules hold in tests/: waits go through testkit/eventually.py.

A hand-rolled deadline loop (`deadline = time.monotonic() + ...`, `loop.time() + ...`)
repeats what `eventually` / `eventually_async` do, usually without a message saying what
did not happen; this scan names each one by file and line so that they do not come back.
"""

from __future__ import annotations

import ast
import re
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.portal.models import User
from testkit import source
from testkit.databases import Database, truncate_all, wait_for_a_lock_wait

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("tests", "testkit")
HELPER = Path("testkit/eventually.py")  # the one place that does deadline arithmetic
HERE = Path(__file__).resolve().relative_to(ROOT)  # its samples below are not loops
CLOCK = r"(?:\btime\.monotonic|\btime\.time|\bloop\.time|\bget_running_loop\(\)\.time" \
        r"|\bget_event_loop\(\)\.time)\(\)"
# a deadline computed (`clock() + timeout`) or a loop that reads the clock in its condition
DEADLINE = re.compile(rf"{CLOCK}\s*\+|^\s*while\b.*{CLOCK}")
# Lines that measure or budget time rather than wait for something: (path, text in line).
ALLOWED: list[tuple[str, str]] = [
    # the soak runs its chaos for HERALD_SOAK_SECONDS: a duration, not a wait
    ("tests/test_soak.py", "deadline = time.monotonic() + seconds"),
    ("tests/test_soak.py", "while time.monotonic() < deadline:"),
    # token expiry times (`exp`) given to the identity timers, not deadlines
    ("tests/test_idle_timers.py", "time.time() + "),
]


def offences(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1)
            if DEADLINE.search(line.split("#", 1)[0])]


def allowed(path: Path, line: str) -> bool:
    return any(path == Path(where) and text in line for where, text in ALLOWED)


def test_no_hand_rolled_deadline_loop_outside_eventually() -> None:
    found = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative in (HELPER, HERE) or "node_modules" in relative.parts:
                continue
            lines = path.read_text().splitlines()
            found += [f"{relative}:{n}: {lines[n - 1].strip()}"
                      for n in offences(path.read_text())
                      if not allowed(relative, lines[n - 1])]
    assert not found, ("deadline loops: use testkit.eventually (eventually / "
                       "eventually_async) instead:\n" + "\n".join(found))


def test_the_scan_sees_each_form_of_deadline() -> None:
    sample = ("deadline = time.monotonic() + 10\n"
              "until = loop.time() + seconds\n"
              "end = asyncio.get_running_loop().time() + 5\n"
              "started = time.monotonic()  # a measurement, not a deadline\n"
              "# deadline = time.monotonic() + 1 in a comment\n"
              "    while node.alive() and time.monotonic() - started < 15:\n"
              "elapsed = time.monotonic() - started\n")
    assert offences(sample) == [1, 2, 3, 6]


def test_ast_parse_is_serialised_in_the_test_process() -> None:
    """CPython 3.11's ast.parse is not thread-safe (testkit.source.serialise_parses): a
    parse in another thread waits while one is under way."""
    done = threading.Event()
    with source._PARSES:  # as a parse under way holds it
        thread = threading.Thread(target=lambda: (ast.parse("x = 1"), done.set()))
        thread.start()
        assert not done.wait(0.2)
    thread.join(5)
    assert done.is_set()


def test_a_serialised_parse_runs_again_after_a_spurious_recursion_depth_mismatch() -> None:
    """A nested parse in the same thread (a finaliser's, inside the re-entrant lock) resets
    3.11's counter under the outer one: the outer parse fails with a mismatch that says
    nothing about the source, and is tried again."""
    calls = []

    def flaky(text: str) -> str:
        calls.append(text)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=261, after=284)")
        return f"tree of {text}"

    assert source.serialised(flaky)("x = 1") == "tree of x = 1"
    assert calls == ["x = 1", "x = 1"]


def test_a_serialised_parse_does_not_hide_a_real_error() -> None:
    def broken(text: str) -> str:
        raise SystemError("something else")

    with pytest.raises(SystemError, match="something else"):
        source.serialised(broken)("x = 1")


def test_emptying_the_tables_tries_again_when_postgresql_breaks_a_deadlock_with_a_reader(
        pg_db: Database) -> None:
    """A reader holds the TRUNCATE's last table and then asks for its first one, which the
    TRUNCATE holds: PostgreSQL rolls the TRUNCATE back, the reader goes on, and
    `truncate_all` empties the tables on its next try. (The backend whose deadlock check
    finds the cycle is the one rolled back: the TRUNCATE's session checks 5 s into its
    wait, after the reader has closed the cycle; the reader's checks only after 60 s.)"""
    with pg_db.factory() as session, session.begin():
        session.add(User(email="left@example.com", role="client"))
    emptier = create_engine(pg_db.url, connect_args={"options": "-c deadlock_timeout=5s"})
    failed: list[BaseException] = []

    def empty() -> None:
        try:
            truncate_all(emptier)
        except BaseException as exc:
            failed.append(exc)

    try:
        with pg_db.engine.connect() as reader:
            reader.execute(text("SET deadlock_timeout = '60s'"))
            reader.execute(text("SELECT count(*) FROM idempotency_keys"))  # the last one
            emptying = threading.Thread(target=empty)
            emptying.start()
            wait_for_a_lock_wait(pg_db)
            reader.execute(text("SELECT count(*) FROM messages"))  # the first: a deadlock
            reader.commit()
            emptying.join(30)
            assert not emptying.is_alive() and not failed, failed
    finally:
        emptier.dispose()
    with pg_db.factory() as session:
        assert session.scalar(text("SELECT count(*) FROM users")) == 0
