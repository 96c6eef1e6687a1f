"""What a test process leaves in Redis, deleted when its session ends.

Every Redis name a test process uses contains its RUN (testkit/testrun.py): so do the keys
named after them (presence, roster, rate limits, metrics, heartbeats, wake-up lists) and
Celery's for its queues (kombu's binding tables `_kombu.binding.<queue>` and
`_kombu.binding_permanent.<queue>`, the queue's lists). Kombu also keeps entries for a
queue in keys that every Celery app on a Redis shares: its deadline in
`_kombu.binding_deadlines`, and in `unacked` / `unacked_index` the messages a killed worker
took and never acked (which any worker on that Redis puts back in their queue an hour later).

`delete_run_keys` finds them with SCAN (HSCAN, ZSCAN) on the run's name, never FLUSHDB:
other namespaces (a developer's `make dev`, other runs) keep theirs. Each pytest-xdist
worker has its own RUN and deletes its own at the end of its session. The private
redis-servers, Cluster and Sentinel set the fault tests start are stopped before then,
without persistence: what they held is gone with them.
"""

from __future__ import annotations

import json
import re

import redis

DEADLINES = "_kombu.binding_deadlines"  # kombu.transport.redis: members are exchanges
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"  # delivery tag -> [message, exchange, key]


def delete_run_keys(url: str, run: str) -> int:
    """Delete the keys naming `run` (10 hex digits, not within a longer hex string) and
    kombu's shared entries for its queues; how many keys."""
    ours = re.compile(rf"(?<![0-9a-f]){re.escape(run)}(?![0-9a-f])").search
    match = f"*{run}*"
    with redis.Redis.from_url(url, decode_responses=True, encoding_errors="replace",
                              socket_timeout=10, socket_connect_timeout=2) as client:
        keys = [key for key in client.scan_iter(match=match, count=1000) if ours(key)]
        for at in range(0, len(keys), 1000):
            client.unlink(*keys[at:at + 1000])
        exchanges = [name for name, _ in client.zscan_iter(DEADLINES, match=match)
                     if ours(name)]
        if exchanges:
            client.zrem(DEADLINES, *exchanges)
        tags = [tag for tag, entry in client.hscan_iter(UNACKED) if ours(_destination(entry))]
        if tags:
            client.hdel(UNACKED, *tags)
            client.zrem(UNACKED_INDEX, *tags)
    return len(keys)


def _destination(entry: str) -> str:
    """The exchange and routing key of an `unacked` entry ("" if it is not kombu's)."""
    try:
        _message, exchange, routing_key = json.loads(entry)
    except (ValueError, TypeError):
        return ""
    return f"{exchange} {routing_key}"


__all__ = ["delete_run_keys"]
