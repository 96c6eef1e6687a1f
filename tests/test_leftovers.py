"""A test session deletes, when it ends, every Redis key its tests made (testkit/leftovers.py),
under pytest-xdist too: each worker its own. Keys of any other namespace stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis as redis_lib

from testkit.leftovers import delete_run_keys
from testkit.processes import ROOT
from testkit.redis import PrivateRedis

# Two files for two xdist workers: each records its RUN and the keys naming it it sees.
RECORD = '''
import json, os
from pathlib import Path
import redis
from testkit.testrun import REDIS_URL, RUN

def record() -> None:
    keys = sorted(redis.Redis.from_url(REDIS_URL, decode_responses=True).scan_iter(f"*{RUN}*"))
    Path(os.environ["LEFTOVERS_RECORDS"], f"{RUN}.json").write_text(
        json.dumps({"run": RUN, "keys": keys}))
'''
INNER = {
    # web node and Celery worker processes, a socket: roster, metrics, heartbeats, presence,
    # rate-limit windows, kombu's bindings
    "test_inner_system.py": RECORD + '''
import asyncio
from testkit.clients import SocketClient
from testkit.system import fresh

def test_a_socket_on_a_real_system(sqlite_system_session):
    system = fresh(sqlite_system_session)
    api = system.api()
    user, token = api.user("client")
    project = api.project(user)

    async def connect():
        socket = SocketClient(system.url, token)
        await socket.connect()
        assert (await socket.call("join-project", project))["ok"]
        record()  # (its presence goes with it)
        await socket.close()
    asyncio.run(connect())
''',
    # in this process: a task nobody takes (a queue's list, no TTL), a derived namespace's
    # counters, fresh_name()'s
    "test_inner_names.py": RECORD + '''
from app.core.settings import Settings
from app.outbox.meter import RelayMeter
from app.outbox.taskqueue import RELAY_TASK, make_celery
from testkit.testrun import fresh_name

def test_names_of_the_run(redis_url):
    make_celery(Settings()).send_task(RELAY_TASK)
    derived = Settings(database_url=f"postgresql+psycopg://u@h/herald_t_{RUN}_ns",
                       socketio_channel="", celery_queue="", namespace="")
    client = redis.Redis.from_url(redis_url)
    RelayMeter(client, channel=derived.socketio_channel).published([object()])
    client.set(fresh_name("leftover"), 1)
    record()
''',
}

QUICK = ["-p", "no:cacheprovider", "-p", "no:schemathesis", "-p", "no:hypothesispytest"]


def test_a_session_under_xdist_deletes_its_workers_keys_and_no_others(
        redis_url: str, tmp_path: Path) -> None:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    others = [f"herald-test-{uuid.uuid4().hex[:10]}:presence:sids:1",  # another run
              f"herald-{uuid.uuid4().hex[:8]}:socketio:presence:sids:3",  # `make dev`'s
              f"_kombu.binding.herald-{uuid.uuid4().hex[:8]}:celery"]
    for key in others:
        client.set(key, 1, ex=600)
    records = tmp_path / "records"
    records.mkdir()
    for name, text in INNER.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", "pyproject.toml",
             "--rootdir", ".", "-q", *QUICK, "-n", "2", "--dist", "load",  # a file each
             *(str(tmp_path / name) for name in INNER)],
            cwd=ROOT, env={**env, "LEFTOVERS_RECORDS": str(records)}, capture_output=True,
            text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        seen = [json.loads(path.read_text()) for path in records.iterdir()]
        assert len(seen) == 2, seen  # one RUN per worker
        made = [key for record in seen for key in record["keys"]]
        for kind in ("_kombu.binding.", "_kombu.binding_permanent.", ":presence:",
                     ":limits:", ":roster:", ":metrics", "herald_t_", "-leftover-"):
            assert any(kind in key for key in made), (kind, made)
        for record in seen:
            assert list(client.scan_iter(f"*{record['run']}*")) == []
        assert [client.exists(key) for key in others] == [1, 1, 1]
    finally:
        client.delete(*others)
        client.close()


def test_kombus_shared_entries_of_the_runs_queues_go_and_others_stay(tmp_path: Path) -> None:
    run, other = "0123456789", "abcdef0123"
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        with redis_lib.Redis.from_url(server.url, decode_responses=True) as client:
            ours = [f"herald-test-{run}", f"{{herald-test-{run}-x}}:roster:nodes",
                    f"herald_t_{run}_sys:socketio:limits:1", f"_kombu.binding.herald-test-{run}"]
            theirs = [f"herald-test-{other}", f"herald-test-{run}ff", f"herald-ff{run}:x",
                      "_kombu.binding.celery.pidbox"]
            for key in ours + theirs:
                client.set(key, 1)
            now = time.time()
            client.zadd("_kombu.binding_deadlines", {f"herald-test-{run}": now, "celery": now})
            for tag, queue in (("t1", f"herald-test-{run}-sqlite"), ("t2", "herald:celery")):
                client.hset("unacked", tag, json.dumps([{"body": "…"}, queue, queue]))
                client.zadd("unacked_index", {tag: now})

            assert delete_run_keys(server.url, run) == len(ours)
            assert sorted(client.keys()) == sorted(
                [*theirs, "_kombu.binding_deadlines", "unacked", "unacked_index"])
            assert client.zrange("_kombu.binding_deadlines", 0, -1) == ["celery"]
            assert client.hkeys("unacked") == ["t2"]
            assert client.zrange("unacked_index", 0, -1) == ["t2"]
    finally:
        server.stop()
