"""Redis URLs: one Redis, Redis Sentinel or Redis Cluster, read into a `RedisTarget`.

- `redis://[[user]:password@]host:port/db` and `rediss://…` (TLS): one Redis server;
- `redis+sentinel://[[user]:password@]host:port[,host:port…]/db/service` (as
  python-socketio writes it): the master that the sentinels name `service`; the password
  is the master's (and the sentinels', if they ask for one);
- `redis+cluster://[[user]:password@]host:port[,host:port…]` (`rediss+cluster://`: TLS):
  a Redis Cluster, reached through any of its nodes.

Celery's broker URL (`HERALD_BROKER_URL`) is translated here too (`celery_broker`).
Nothing here connects: app/core/redisclients.py makes the clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

Kind = Literal["redis", "sentinel", "cluster"]
_PLAIN = {"redis", "rediss", "unix"}
_SENTINEL = {"redis+sentinel"}
_CLUSTER = {"redis+cluster", "rediss+cluster"}


@dataclass(frozen=True)
class RedisTarget:
    """Where a Redis URL points: `kind`, its `url`, the sentinels or cluster `nodes` given,
    the Sentinel `service`, and the connection `options` (username, password, db, ssl)."""

    kind: Kind
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_cluster(self) -> bool:
        return self.kind == "cluster"


def _hosts(netloc: str, url: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"not host:port: {part!r} in {_safe(url)}")
        nodes.append((host.strip("[]"), int(port)))
    return tuple(nodes)


def _credentials(netloc: str) -> dict[str, Any]:
    if "@" not in netloc:
        return {}
    userinfo = netloc.rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    out: dict[str, Any] = {}
    if user:
        out["username"] = unquote(user)
    if password:
        out["password"] = unquote(password)
    return out


def _safe(url: str) -> str:
    """`url` without its password (for error messages and logs)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return url.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[-1], 1)


def parse_redis_url(url: str) -> RedisTarget:
    """The target of a Redis URL; ValueError (one clear line) for anything else."""
    scheme = urlsplit(url).scheme.lower()
    netloc = urlsplit(url).netloc
    if scheme in _PLAIN:
        return RedisTarget("redis", url)
    if scheme in _SENTINEL:
        path = [p for p in urlsplit(url).path.split("/")]
        options = _credentials(netloc)
        if len(path) >= 2 and path[1]:
            if not path[1].isdigit():
                raise ValueError(f"Sentinel URL: db must be a number in {_safe(url)} "
                                 "(redis+sentinel://host:port[,host:port]/db/service)")
            options["db"] = int(path[1])
        service = path[2] if len(path) >= 3 and path[2] else None
        if service is None:
            raise ValueError(f"Sentinel URL without a service name: {_safe(url)} "
                             "(redis+sentinel://host:port[,host:port]/db/service)")
        return RedisTarget("sentinel", url, _hosts(netloc, url), service, options)
    if scheme in _CLUSTER:
        options = _credentials(netloc)
        if scheme.startswith("rediss"):
            options["ssl"] = True
        return RedisTarget("cluster", url, _hosts(netloc, url), None, options)
    raise ValueError(f"not a Redis URL: {_safe(url)} (redis://, rediss://, "
                     "redis+sentinel://, redis+cluster://)")


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme.lower() in _CLUSTER


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL and extra transport options for `url`: a Redis Sentinel URL
    becomes kombu's `sentinel://host:port;sentinel://…/db` with `master_name`; a plain Redis
    or any other broker (amqp://) is used as it is. A Redis Cluster is refused: Celery's
    Redis transport does not speak it (set HERALD_BROKER_URL)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in _CLUSTER:
        raise ValueError("Celery cannot use a Redis Cluster as its broker: set "
                         "HERALD_BROKER_URL (a plain Redis, Redis Sentinel or amqp://)")
    if scheme not in _SENTINEL:
        return url, {}
    target = parse_redis_url(url)
    auth = ""
    if target.options.get("password"):
        auth = f"{target.options.get('username', '')}:{target.options['password']}@"
    db = target.options.get("db", 0)
    broker = ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in target.nodes)
    return broker, {"master_name": target.service}


__all__ = ["RedisTarget", "celery_broker", "is_cluster", "parse_redis_url"]
