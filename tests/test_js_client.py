"""The JavaScript client (clients/js) against a real Herald: `node --test` drives it.

The Node tests run against the PostgreSQL system (web node + Celery worker). What a client
cannot do by itself — mint short-lived tokens, lose a live message, change a stream's epoch,
prune history, kill and restart the web node — they ask of a small control server that this
module runs on loopback for the duration of the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import text, update

from app.core.db import utcnow
from app.outbox.retention import prune_events
from app.outbox.tables import RelayCursor, Stream, new_epoch
from app.outbox.writer import append
from testkit.clients import token
from testkit.eventually import eventually
from testkit.processes import ROOT, WebNode
from testkit.system import System
from testkit.testrun import CI

JS = ROOT / "clients" / "js"
NODE_TIMEOUT = 100  # below the per-test timeout, so that node's output is shown


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "socket.io-client").is_dir():
        message = "node and clients/js/node_modules are needed (make install runs npm ci)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return node


class Control:
    """What the Node tests may ask of the system, by name."""

    def __init__(self, system: System) -> None:
        self.system = system

    def token(self, body: dict[str, Any]) -> dict[str, Any]:
        ttl = timedelta(seconds=float(body.get("ttl", 3600)))
        return {"token": token(body["userId"], body["role"], body.get("email"), ttl=ttl)}

    def append(self, body: dict[str, Any]) -> dict[str, Any]:
        """Write an event (relayed live by the worker's sweep)."""
        with self.system.factory() as session, session.begin():
            event = append(session, body["stream"], body["type"], body["data"])
        return {"offset": event.offset, "epoch": event.epoch}

    def lose(self, body: dict[str, Any]) -> dict[str, Any]:
        """Write an event and mark it relayed, as if its pub/sub message were lost."""
        with self.system.factory() as session, session.begin():
            event = append(session, body["stream"], body["type"], body["data"])
            session.execute(update(RelayCursor).where(RelayCursor.stream == body["stream"])
                            .values(dispatched=event.offset))
        return {"offset": event.offset, "epoch": event.epoch}

    def new_epoch(self, body: dict[str, Any]) -> dict[str, Any]:
        """The stream's history is reset: a new epoch (its offsets go on)."""
        epoch = new_epoch()
        with self.system.factory() as session, session.begin():
            session.execute(update(Stream).where(Stream.name == body["stream"])
                            .values(epoch=epoch))
        return {"epoch": epoch}

    def prune(self, body: dict[str, Any]) -> dict[str, Any]:
        """Age the stream's events up to `through` past retention and prune them."""
        self._wait_dispatched(body["stream"])
        with self.system.factory() as session, session.begin():
            session.execute(text('UPDATE events SET created_at = :old WHERE stream = :s '
                                 'AND "offset" <= :through'),
                            {"old": utcnow() - timedelta(days=30), "s": body["stream"],
                             "through": body["through"]})
        return {"pruned": prune_events(self.system.factory, retention=timedelta(days=7))}

    def kill_web(self, body: dict[str, Any]) -> dict[str, Any]:
        self.system.webs[0].kill()
        return {}

    def start_web(self, body: dict[str, Any]) -> dict[str, Any]:
        old = self.system.webs[0]
        node = WebNode(self.system.env, self.system.log_dir, port=old.port)
        node.start()
        self.system.webs[0] = node
        return {}

    def _wait_dispatched(self, stream: str, timeout: float = 30) -> None:
        def caught_up() -> bool:
            with self.system.factory() as session:
                head = session.get(Stream, stream)
                cursor = session.get(RelayCursor, stream)
                return head is None or (cursor is not None and cursor.dispatched >= head.head)

        eventually(caught_up, f"relay did not catch up on {stream}", timeout)


def _serve(control: Control) -> ThreadingHTTPServer:
    actions: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "/token": control.token, "/append": control.append, "/lose": control.lose,
        "/new-epoch": control.new_epoch, "/prune": control.prune,
        "/kill-web": control.kill_web, "/start-web": control.start_web,
    }

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            action = actions.get(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            try:
                if action is None:
                    raise KeyError(self.path)
                result, status = action(json.loads(self.rfile.read(length) or b"{}")), 200
            except Exception as exc:  # reported to the Node test, which fails on it
                result, status = {"error": f"{type(exc).__name__}: {exc}"}, 500
            body = json.dumps(result).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def control_url(pg_system: System) -> Iterator[str]:
    server = _serve(Control(pg_system))
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


NODE_TESTS = sorted(p.name for p in (JS / "test").glob("*.test.js"))


@pytest.mark.parametrize("suite", NODE_TESTS)
def test_js_client_node_suite_passes_against_a_real_server(
    pg_system: System, control_url: str, suite: str
) -> None:
    """One `node --test` file: resume, dedupe and gap repair (resume.test.js); token refresh,
    offline queue, typing and tabs (session.test.js); tokens refused for good (auth.test.js);
    pure logic (tracker, tabs)."""
    node = _node()
    env = {**os.environ, "HERALD_URL": pg_system.url, "HERALD_CONTROL": control_url,
           "HERALD_ADMIN_TOKEN": pg_system.admin_token}
    try:
        done = subprocess.run([node, "--test", "--test-force-exit", f"test/{suite}"], cwd=JS,
                              env=env, capture_output=True, text=True, timeout=NODE_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node --test did not finish in {NODE_TIMEOUT} s:\n{exc.stdout!r}")
    output = f"{done.stdout[-20000:]}\n{done.stderr[-5000:]}"
    assert done.returncode == 0, f"node --test failed:\n{output}"
    assert "# fail 0" in done.stdout and "# skipped 0" in done.stdout, output
