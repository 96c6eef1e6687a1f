"""`herald tail` follows a stream as a client, and survives its web node restarting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testkit.eventually import eventually
from testkit.processes import BIN, ROOT, WebNode
from testkit.system import System


class TailProcess:
    """`herald tail …` as a subprocess; stdout lines collected by a reader thread."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.lines: list[dict[str, Any]] = []
        with log.open("wb") as err:
            self.proc = subprocess.Popen([str(BIN / "herald"), "tail", *argv], cwd=ROOT,
                                         env={**os.environ, **env}, stdout=subprocess.PIPE,
                                         stderr=err, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: Callable[[], bool], timeout: float = 20) -> None:
        def done() -> bool:
            if what():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"tail exited {self.proc.returncode}: {self.stderr()}")
            return False

        eventually(done, lambda: f"timed out; printed {self.offsets()}; {self.stderr()}",
                   timeout)

    def offsets(self) -> list[int]:
        return [line["meta"]["offset"] for line in self.lines]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def test_tail_prints_each_event_once_across_a_web_node_restart(
    pg_system: System, node: WebNode, tmp_path: Path
) -> None:
    api = pg_system.api()
    client_id, _ = api.user("client")
    project = api.project(client_id)
    stream = f"project-{project}"

    def update(progress: int) -> None:
        api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})

    update(1)  # before the tail starts: shown because of --from 0
    tail = TailProcess([stream, "--from", "0", "--user", str(client_id), "--url", node.url],
                       pg_system.env, tmp_path / "tail.err")
    try:
        tail.wait_for(lambda: tail.offsets() == [1])
        update(2)
        tail.wait_for(lambda: tail.offsets() == [1, 2])
        first = tail.lines[0]
        assert first["type"] == "project-updated"
        assert (first["payload"]["projectId"], first["payload"]["progress"]) == (project, 1)
        assert set(first["meta"]) == {"id", "stream", "offset", "epoch", "ts"}

        node.kill()  # the node crashes; events keep being written and relayed meanwhile
        update(3)
        update(4)
        restarted = WebNode(pg_system.env, tmp_path, port=node.port)
        restarted.start()
        node.proc = restarted.proc  # the fixture stops whichever process runs now
        tail.wait_for(lambda: len(tail.offsets()) >= 4)
        update(5)
        tail.wait_for(lambda: len(tail.offsets()) >= 5)
        update(6)  # a sentinel: a duplicate of 1-5 would be printed before it
        tail.wait_for(lambda: 6 in tail.offsets())
        assert tail.offsets() == [1, 2, 3, 4, 5, 6]
        assert [line["payload"]["progress"] for line in tail.lines] == [1, 2, 3, 4, 5, 6]
        assert len({line["meta"]["id"] for line in tail.lines}) == 6
        assert "connection lost" in tail.stderr()
    finally:
        tail.stop()


def test_tail_exits_1_with_one_line_when_it_may_not_read_the_stream(pg_system: System) -> None:
    api = pg_system.api()
    owner_id, _ = api.user("client")
    _, outsider = api.user("client")
    project = api.project(owner_id)
    done = subprocess.run([str(BIN / "herald"), "tail", f"project-{project}", "--token", outsider,
                           "--url", pg_system.url], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **pg_system.env})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"herald: project-{project}: not_found: stream project-{project} not found"]


def test_tail_starts_each_stream_after_its_own_from_offset(
    pg_system: System, tmp_path: Path
) -> None:
    api = pg_system.api()
    client_id, _ = api.user("client")
    first, second = api.project(client_id), api.project(client_id)
    for project in (first, second):
        for progress in (1, 2, 3):
            api.ok("PATCH", f"/api/projects/{project}", json={"progress": progress})
    a, b = f"project-{first}", f"project-{second}"
    tail = TailProcess([a, b, "--from", f"{a}:1", "--from", f"{b}:2", "--user", str(client_id),
                        "--url", pg_system.url], pg_system.env, tmp_path / "tail.err")
    try:
        tail.wait_for(lambda: len(tail.lines) >= 3)
        api.ok("PATCH", f"/api/projects/{second}", json={"progress": 4})
        tail.wait_for(lambda: len(tail.lines) >= 4)
        for project in (first, second):  # sentinels: what the --from offsets should skip
            api.ok("PATCH", f"/api/projects/{project}", json={"progress": 5})  # comes first
        tail.wait_for(lambda: {(line["meta"]["stream"], line["meta"]["offset"])
                               for line in tail.lines} >= {(a, 4), (b, 5)})
        by_stream = {s: [line["meta"]["offset"] for line in tail.lines
                         if line["meta"]["stream"] == s] for s in (a, b)}
        assert by_stream == {a: [2, 3, 4], b: [3, 4, 5]}
    finally:
        tail.stop()


def test_tail_exits_0_quietly_on_ctrl_c(pg_system: System, tmp_path: Path) -> None:
    client_id, _ = pg_system.api().user("client")
    tail = TailProcess([f"user-{client_id}", "--user", str(client_id), "--url", pg_system.url],
                       pg_system.env, tmp_path / "tail.err")
    try:
        tail.wait_for(lambda: "connected to" in tail.stderr())
        tail.proc.send_signal(signal.SIGINT)
        assert tail.proc.wait(15) == 0
        # quiet: the stop is not reported as a lost connection
        [line] = tail.stderr().splitlines()
        assert line.startswith("herald tail: connected to"), tail.stderr()
    finally:
        tail.stop()


def test_tail_refuses_a_from_for_a_stream_it_does_not_follow(pg_system: System) -> None:
    done = subprocess.run([str(BIN / "herald"), "tail", "user-1", "--from", "user-2:3",
                           "--token", "t", "--url", pg_system.url], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **pg_system.env})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == \
        "herald: --from user-2:3: user-2 is not one of the streams followed"
