"""Redis beyond one instance for tests: a Redis Cluster and a Sentinel set on free ports.

`LocalCluster`: 3 masters and 3 replicas (`redis-cli --cluster create`), a short node
timeout so that a killed master's replica takes over within seconds. `LocalSentinel`: a
master, a replica and one sentinel (quorum 1) with short timeouts. Both without
persistence, in a temporary directory, stopped at the end of the session.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from testkit.eventually import eventually
from testkit.processes import free_port


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is valid and free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")

SERVICE = "herald"


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


class _Server:
    def __init__(self, directory: Path, argv: list[str], port: int) -> None:
        self.port = port
        self.directory = directory
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "log").open("ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=self.directory, stdout=log,
                                         stderr=subprocess.STDOUT)

    def wait(self) -> None:
        with redis_lib.Redis(port=self.port, socket_connect_timeout=0.5) as client:
            eventually(client.ping, f"redis on {self.port} did not start", timeout=10,
                       ignoring=(redis_lib.RedisError,))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def _redis_argv(port: int, *extra: str) -> list[str]:
    # A replica's full sync starts at once (Redis waits 5 s by default, for other replicas
    # to share the transfer): a Sentinel set is in sync a second after it starts, and a
    # server revived as a replica as soon as it asks.
    return [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0", *extra]


class LocalCluster:
    """A Redis Cluster of `masters` masters, each with one replica."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.servers = []
        for _ in range(masters * 2):
            port = cluster_port()
            self.servers.append(_Server(directory / str(port), _redis_argv(
                port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0"),
                port))
        self.masters = masters

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:2])

    def start(self) -> None:
        for server in self.servers:
            server.start()
        for server in self.servers:
            server.wait()
        subprocess.run([_binary("redis-cli"), "--cluster", "create",
                        *[f"127.0.0.1:{s.port}" for s in self.servers],
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        self.wait_healthy()

    def client(self) -> redis_lib.RedisCluster:
        alive = next(s for s in self.servers if s.proc is not None and s.proc.poll() is None)
        return redis_lib.RedisCluster(host="127.0.0.1", port=alive.port)

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every node answers and says the cluster is ok (all slots served)."""
        def healthy() -> bool:
            states = []
            for server in self.servers:
                if server.proc is None or server.proc.poll() is not None:
                    continue
                try:
                    with redis_lib.Redis(port=server.port, socket_timeout=1) as client:
                        states.append(str(client.cluster("info").get("cluster_state")) == "ok")
                except redis_lib.RedisError:
                    states.append(False)
            return bool(states) and all(states)

        eventually(healthy, "redis cluster not healthy", timeout=timeout, interval=0.2)

    def master_of(self, key: str) -> _Server:
        """The server that is, now, the master owning `key`'s slot."""
        node = self.client().get_node_from_key(key)
        return next(s for s in self.servers if s.port == node.port)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class LocalSentinel:
    """A master, a replica and one sentinel (quorum 1) watching them as SERVICE."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        mport, rport, sport = free_port(), free_port(), free_port()
        self.master = _Server(directory / "master", _redis_argv(mport), mport)
        self.replica = _Server(directory / "replica", _redis_argv(
            rport, "--replicaof", "127.0.0.1", str(mport)), rport)
        self.sentinel_port = sport
        self.sentinel: _Server | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/0/{SERVICE}"

    def start(self) -> None:
        """The master and its replica, in sync; then the sentinel, until it counts the
        replica as one it may promote (its first look at the replica is after the sync)."""
        self.master.start()
        self.replica.start()
        self.master.wait()
        self.replica.wait()
        with redis_lib.Redis(port=self.replica.port) as replica:
            eventually(lambda: replica.info("replication").get("master_link_status") == "up",
                       "sentinel set: the replica did not sync", timeout=20, interval=0.1)
        conf = self.directory / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n")
        self.sentinel = _Server(self.directory / "sentinel",
                                [_binary("redis-server"), str(conf), "--sentinel"],
                                self.sentinel_port)
        self.sentinel.start()
        self.sentinel.wait()
        with redis_lib.Redis(port=self.sentinel_port) as sentinel:
            eventually(lambda: self._promotable(sentinel),
                       "sentinel set: the sentinel does not count the replica", timeout=20,
                       interval=0.1)

    def _promotable(self, sentinel: redis_lib.Redis[bytes]) -> bool:
        """Whether the sentinel sees the replica up, and its link to the master up."""
        return any(int(state["port"]) == self.replica.port and state["flags"] == "slave"
                   and state["master-link-status"] == "ok"
                   for state in sentinel.sentinel_slaves(SERVICE))  # type: ignore[no-untyped-call]

    def master_port(self) -> int:
        _host, port = redis_lib.Redis(port=self.sentinel_port).sentinel_get_master_addr_by_name(
            SERVICE)
        return int(port)

    def current_master(self) -> _Server:
        port = self.master_port()
        return self.master if self.master.port == port else self.replica

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            if server is not None:
                server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A local 3-master Redis Cluster (each master with a replica) for this session."""
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    """A local Sentinel set (master, replica, one sentinel) for this session."""
    sentinel = LocalSentinel(tmp_path_factory.mktemp("redis-sentinel"))
    try:
        sentinel.start()
        yield sentinel
    finally:
        sentinel.stop()
