"""A reconnect storm over two real web nodes (testkit/storm.py; `python -m bench --only
storm` runs it with 10,000 sockets): one node SIGKILLed and started again on the same port
while events are written and relayed, its sockets reconnecting with their positions over
both nodes. Every socket gets every event of its streams in order, and the replays' reads
of a shared room's page are shared between the sockets replaying it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.processes import WebNode
from testkit.storm import STORM_JS, StormSizes, WebNodeLike, run_storm
from testkit.system import System, relay_nudger
from testkit.testrun import CI

pytestmark = pytest.mark.anyio
SIZES = StormSizes(sockets=300, projects=3, per_socket=2, missed=5, rate=10.0, warmup=1.0,
                   jitter=0.5, inflight=50, timeout=90.0)


def node_bin() -> str:
    node = shutil.which("node")
    if node is None or not (STORM_JS.parent / "node_modules" / "ws").is_dir():
        message = "node or bench/node/node_modules missing (make install runs npm ci)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return node


@pytest.fixture
def nodes(pg_system: System, tmp_path: Path) -> Iterator[list[WebNode]]:
    """Two web nodes of our own on `pg_system` (its worker relays); the test restarts one."""
    started = [WebNode(pg_system.env, tmp_path), WebNode(pg_system.env, tmp_path)]
    for node in started:
        node.spawn()
    try:
        for node in started:
            node.wait_ready()
        yield started
    finally:
        for node in started:
            node.stop()


@pytest.mark.timeout(300)
async def test_sockets_of_a_restarted_node_recover_every_event_in_order_with_shared_reads(
        pg_system: System, nodes: list[WebNode], tmp_path: Path) -> None:
    def restart(node: WebNodeLike) -> WebNodeLike:
        again = WebNode(pg_system.env, tmp_path, port=node.port)
        again.spawn()
        nodes.append(again)
        return again

    result = await run_storm(pg_system.factory, (nodes[0], nodes[1]), restart,
                             relay_nudger(), SIZES, node_bin=node_bin(), log_dir=tmp_path)

    assert result.reconnected >= result.killed == SIZES.sockets // 2
    assert result.streams == result.expected_streams  # user, role and project rooms each
    assert (result.complete, result.gaps, result.early, result.resets) == (
        SIZES.sockets, 0, 0, 0)
    assert result.presence_early == 0  # no presence event before a socket's `connected`
    assert not result.survivor_lost  # the node not killed kept every connection
    assert not result.errors
    # Every reconnecting socket replays the role room's missed page: the nodes read it far
    # fewer times than it was asked for. A user stream has one socket: one read each.
    role_requests, role_reads = result.pages["role"]
    assert role_requests >= result.killed * 0.8  # a few may have come back before the burst
    assert role_reads * 10 <= role_requests
    project_requests, project_reads = result.pages["project"]
    assert project_requests >= result.killed * SIZES.per_socket * 0.8
    assert project_reads * 10 <= project_requests
