"""A web node's listening connections on a Redis Cluster: one per master it needs.

On a Redis Cluster a stream's channel lives on the node that owns its slot: `SSUBSCRIBE`
must reach that node, and one command may only name channels of one slot (otherwise
Redis answers CROSSSLOT). `ShardedPubSub` looks like the redis-py PubSub the manager
uses on one Redis (`subscribe`, `ssubscribe`, `sunsubscribe`, `listen`, `aclose`), but:

- groups each batch of channels by slot, and sends each group to the master owning it,
  on a plain connection of its own to that master (one per master, made when first
  needed); the shared channel (`SUBSCRIBE`: a cluster's `PUBLISH` reaches every node)
  goes on the connection of its own slot's master;
- merges what every connection receives into one `listen()`;
- fails as a whole: when any of its connections fails, or Redis answers a command with
  an error (MOVED after a failover), `listen()` raises. The manager then treats it as a
  lost subscription (app/gateway/manager.py): it makes a new one on the cluster's
  current slot map, subscribes every wanted room again and catches the rooms up from
  the event table, so a failover loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

_FAILED = object()


class ShardedPubSub:
    """Pub/sub over the masters of a Redis Cluster (see the module's docstring)."""

    def __init__(self, cluster: Any, options: dict[str, Any]) -> None:
        self.cluster = cluster  # a redis.asyncio.cluster.RedisCluster
        self.options = options  # connection options of the per-master clients (auth, ssl)
        self._clients: dict[str, Any] = {}
        self._subs: dict[str, Any] = {}  # master's name -> its PubSub
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        self._where: dict[str, str] = {}  # channel -> name of the master it is on
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._ready = False

    async def _start(self) -> None:
        if not self._ready:
            # The current slot map (after a failover: the promoted replicas), and every
            # master in it answering: until then (a failover under way) the manager waits
            # and tries again, rather than subscribing part of the rooms.
            # (the manager makes a new cluster client for each attempt; `initialize` also
            # readies the client's command parser, which its own SPUBLISH needs)
            await self.cluster.initialize()
            for node in self.cluster.get_primaries():
                probe: Any = aioredis.Redis(host=node.host, port=node.port, socket_timeout=1,
                                       socket_connect_timeout=1, retry=Retry(NoBackoff(), 0),
                                       **self.options)
                try:
                    await probe.ping()
                finally:
                    await probe.aclose()
            self._ready = True

    def _sub_for(self, channel: str) -> tuple[str, Any]:
        node = self.cluster.nodes_manager.get_node_from_slot(key_slot(channel.encode()))
        name = str(node.name)
        if name not in self._subs:
            client = aioredis.Redis(host=node.host, port=node.port,
                                    retry=Retry(NoBackoff(), 0), socket_connect_timeout=2,
                                    **self.options)
            self._clients[name] = client
            self._subs[name] = client.pubsub(ignore_subscribe_messages=False)
            self._wakes[name] = asyncio.Event()
            self._readers[name] = asyncio.create_task(self._read(name))
        return name, self._subs[name]

    async def subscribe(self, channel: str) -> None:
        try:
            await self._start()
            name, sub = self._sub_for(channel)
            await sub.subscribe(channel)
            self._wakes[name].set()
        except Exception as exc:
            self._fail(exc)
            raise

    async def ssubscribe(self, *channels: str) -> None:
        try:
            await self._ssubscribe(channels)
        except Exception as exc:
            self._fail(exc)
            raise

    async def sunsubscribe(self, *channels: str) -> None:
        try:
            await self._sunsubscribe(channels)
        except Exception as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: Exception) -> None:
        """A command could not be sent (a master away): the whole subscription is lost,
        `listen()` raises, and the manager starts over on the current slot map."""
        self._queue.put_nowait((_FAILED, exc))

    async def _ssubscribe(self, channels: tuple[str, ...]) -> None:
        await self._start()
        by_slot: dict[int, list[str]] = {}
        for channel in channels:
            by_slot.setdefault(key_slot(channel.encode()), []).append(channel)
        for group in by_slot.values():
            name, sub = self._sub_for(group[0])
            await sub.ssubscribe(*group)
            for channel in group:
                self._where[channel] = name
            self._wakes[name].set()

    async def _sunsubscribe(self, channels: tuple[str, ...]) -> None:
        by_slot: dict[tuple[str, int], list[str]] = {}
        for channel in channels:
            name = self._where.pop(channel, None)
            if name is not None and name in self._subs:
                by_slot.setdefault((name, key_slot(channel.encode())), []).append(channel)
        for (name, _), group in by_slot.items():
            await self._subs[name].sunsubscribe(*group)

    async def _read(self, name: str) -> None:
        """Move what master `name` sends into the merged queue; a failure ends them all."""
        sub = self._subs[name]
        wake = self._wakes[name]
        try:
            while True:
                if not sub.subscribed:  # nothing on this master (yet, or any more)
                    wake.clear()
                    await wake.wait()
                    continue
                message = await sub.get_message(timeout=None)
                if message is not None:
                    self._queue.put_nowait(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._queue.put_nowait((_FAILED, exc))

    async def listen(self) -> AsyncIterator[Any]:
        while True:
            item = await self._queue.get()
            if isinstance(item, tuple) and item and item[0] is _FAILED:
                raise item[1]
            yield item

    async def aclose(self) -> None:
        for task in self._readers.values():
            task.cancel()
        for task in self._readers.values():
            with contextlib.suppress(BaseException):
                await task
        for name, sub in self._subs.items():
            with contextlib.suppress(Exception):
                await sub.aclose()
            with contextlib.suppress(Exception):
                await self._clients[name].aclose()
        self._readers.clear()
        self._subs.clear()
        self._clients.clear()


__all__ = ["ShardedPubSub"]
