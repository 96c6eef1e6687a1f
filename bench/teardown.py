"""What a bench run leaves behind, found by what it is rather than by who started it, and
removed however the run ends: normally, by an exception, or by SIGTERM or SIGINT (Ctrl-C).

- its **processes**: every descendant of the bench process (web nodes, Celery workers and
  their pool, the Node peers and load clients, writer processes, a local Redis Cluster),
  read from /proc (Linux): those started in a process group of their own (testkit's
  `Process`) are stopped as a group, as `stop_all` stops them: SIGTERM, SIGKILL after
  10 s;
- its **PostgreSQL databases**: `herald_bench_<run>` and `herald_bench_<run>_*`;
- its **Redis keys**: those named after its channels and queues, which all start with
  `herald-bench-<run>` (Celery's bindings, the roster, metrics, rate-limit windows);
- what a part registered with `also()` while it runs: a private PostgreSQL server
  (daemonised, so no descendant of the bench) and its files.

A signal cannot wait for the parts' own `finally` blocks: the run may be in a thread
(`asyncio.to_thread`) that nothing interrupts, or between a spawn and the `try` that
would stop it. So `on_signals()` makes SIGTERM and SIGINT do all of the above at once,
print one line and end the process with 128 + the signal's number (143, 130), skipping
whatever the run was doing; a second signal meanwhile SIGKILLs what is left at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import redis
from sqlalchemy import Engine, create_engine, text

from bench.env import PG_ADMIN_URL, REDIS_URL, RUN
from testkit import pg

NAME = f"herald-bench-{RUN}"  # the start of every channel, queue and Redis key of the run
STOP_TIMEOUT = 10.0  # seconds from SIGTERM to SIGKILL, as testkit's stop_all
_stopping = False  # a signal came: cleaning up
_hurry = False  # a second one came: SIGKILL what is left
_also: dict[int, Callable[[], None]] = {}  # more to remove, registered by the parts


@dataclass(frozen=True)
class Child:
    pid: int
    pgid: int


@dataclass
class Removed:
    processes: int = 0
    databases: int = 0
    keys: int = 0
    others: int = 0  # registered with also()

    def __str__(self) -> str:
        others = f", {_count(self.others, 'server', 'servers')} discarded" \
            if self.others else ""
        return (f"{_count(self.processes, 'process', 'processes')} stopped, "
                f"{_count(self.databases, 'database', 'databases')} dropped, "
                f"{_count(self.keys, 'Redis key', 'Redis keys')} deleted{others}")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def clean() -> Removed:
    """Stop the run's processes, drop its databases, delete its Redis keys (each step
    whatever the others did)."""
    removed = Removed()
    steps = ((stop_processes, "processes"), (run_also, "others"),
             (drop_databases, "databases"), (delete_keys, "keys"))
    for step, field in steps:
        try:
            setattr(removed, field, step())
        except Exception as exc:  # the next steps still run
            print(f"bench: cleaning up {field} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
    return removed


def also(remove: Callable[[], None]) -> Callable[[], None]:
    """Have `clean()` call `remove` too (after the processes stopped), until the returned
    function is called: a part registers what it made and unregisters it once removed."""
    key = id(remove)
    _also[key] = remove

    def forget() -> None:
        _also.pop(key, None)
    return forget


def run_also() -> int:
    """Call what the parts registered (each whatever the others did); how many."""
    done = list(_also.values())
    _also.clear()
    for remove in done:
        try:
            remove()
        except Exception as exc:
            print(f"bench: cleaning up failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return len(done)


def on_signals() -> None:
    """SIGTERM and SIGINT (unless SIGINT is ignored, as in a background job): `clean()`,
    one line on stderr, exit 128 + the signal's number."""
    signal.signal(signal.SIGTERM, _stop)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _stop)


def _stop(signum: int, _frame: FrameType | None) -> None:
    global _stopping, _hurry
    if _stopping:  # a second signal, while the first one cleans up
        _hurry = True  # which goes on, and SIGKILLs what is left
        return
    _stopping = True
    removed = clean()
    name = signal.Signals(signum).name
    with contextlib.suppress(Exception):  # (the run was writing to it: nothing to save)
        sys.stdout.flush()  # the figures printed so far
    os.write(2, f"bench: stopped by {name}: {removed}\n".encode())
    os._exit(128 + signum)


# -- processes ---------------------------------------------------------------------------
def children() -> list[Child]:
    """This process's descendants still running (zombies are not), parents first; the
    multiprocessing resource tracker left out (it ends with this process)."""
    table: dict[int, list[Child]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" or b"multiprocessing.resource_tracker" in cmdline:
            continue
        table.setdefault(int(fields[1]), []).append(Child(int(entry.name), int(fields[2])))
    found: list[Child] = []
    parents = [os.getpid()]
    while parents:
        kids = [kid for parent in parents for kid in table.get(parent, [])]
        found += kids
        parents = [kid.pid for kid in kids]
    return found


def stop_processes(timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM every descendant (its whole group when it leads one, as testkit's `Process`
    children do), then wait until none is left, SIGKILLing them after `timeout` seconds;
    processes that appear meanwhile (started by a thread of the run) get the same.
    Returns how many there were."""
    signalled: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        alive = children()
        if not alive:
            return len(signalled)
        late = _hurry or time.monotonic() >= deadline
        for child in alive:
            if late or child.pid not in signalled:
                _signal(child, signal.SIGKILL if late else signal.SIGTERM)
                signalled.add(child.pid)
        if time.monotonic() >= deadline + timeout:
            raise RuntimeError(f"still running after SIGKILL: "
                               f"{sorted(c.pid for c in alive)}")
        time.sleep(0.05)


def _signal(child: Child, signum: int) -> None:
    try:
        if child.pgid == child.pid:  # its own group (start_new_session): all of it
            os.killpg(child.pid, signum)
        else:
            os.kill(child.pid, signum)
    except (ProcessLookupError, PermissionError):  # gone meanwhile
        pass


# -- PostgreSQL and Redis ----------------------------------------------------------------
def databases() -> list[str]:
    """The run's databases: herald_bench_<run> and herald_bench_<run>_*."""
    name = f"herald_bench_{RUN}"
    admin = _admin()
    try:
        with admin.connect() as conn:
            rows = conn.execute(text(
                "SELECT datname FROM pg_database WHERE datname = :name "
                "OR starts_with(datname, :prefix) ORDER BY datname"),
                {"name": name, "prefix": f"{name}_"})
            return [str(row[0]) for row in rows]
    finally:
        admin.dispose()


def drop_databases() -> int:
    """Drop the run's databases (connections to them closed first); how many."""
    names = databases()
    if names:
        pg.drop_databases(PG_ADMIN_URL, names)
    return len(names)


def _admin() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT",
                         connect_args={"connect_timeout": 10})


_OURS = re.compile(rf"{re.escape(NAME)}(?:[-:}}]|$)")  # not herald-bench-<run>0123's


def keys(client: redis.Redis[bytes]) -> Iterator[bytes]:
    """The run's Redis keys: named after one of its channels or queues."""
    pattern = "*" + re.sub(r"([*?\[\]\\])", r"\\\1", NAME) + "*"  # glob-escaped
    for key in client.scan_iter(match=pattern, count=1000):
        if _OURS.search(key.decode(errors="replace")):
            yield key


def delete_keys() -> int:
    """Delete the run's Redis keys; how many."""
    client: redis.Redis[bytes] = redis.Redis.from_url(REDIS_URL, socket_timeout=10,
                                                      socket_connect_timeout=10)
    try:
        found = list(keys(client))
        for at in range(0, len(found), 1000):
            client.unlink(*found[at:at + 1000])
        return len(found)
    finally:
        client.close()


__all__ = ["Child", "Removed", "also", "children", "clean", "databases", "delete_keys",
           "drop_databases", "keys", "on_signals", "run_also", "stop_processes"]
