"""Redis URLs beyond one instance (issue 16.4): Sentinel and Cluster URLs are read, Celery's
broker is derived from them, and a deployment that cannot have a broker says so at start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from redis.crc import key_slot

from app.core.redisurls import celery_broker, is_cluster, parse_redis_url
from app.core.settings import Settings
from app.outbox.meter import counters_key, heartbeat_key, heartbeats_key, rate_key
from app.outbox.taskqueue import celery_config
from testkit.processes import ROOT


def test_a_sentinel_url_names_the_sentinels_the_db_and_the_service() -> None:
    target = parse_redis_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380/2/herald")
    assert target.kind == "sentinel"
    assert target.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert target.service == "herald"
    assert target.options == {"password": "s3cret", "db": 2}


def test_a_cluster_url_names_any_nodes() -> None:
    target = parse_redis_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001")
    assert target.is_cluster and is_cluster(target.url)
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert parse_redis_url("rediss+cluster://h:7000").options == {"ssl": True}


@pytest.mark.parametrize("url", ["http://h:1", "redis+sentinel://h:26379/0",
                                 "redis+cluster://h", "redis+sentinel://h:1/x/svc"])
def test_a_url_herald_cannot_use_is_refused_with_a_reason(url: str) -> None:
    with pytest.raises(ValueError, match=r"URL|host:port"):
        parse_redis_url(url)


def test_celery_reaches_a_sentinel_master_through_kombus_sentinel_transport() -> None:
    broker, options = celery_broker("redis+sentinel://h1:26379,h2:26380/3/herald")
    assert broker == "sentinel://h1:26379/3;sentinel://h2:26380/3"
    assert options == {"master_name": "herald"}
    assert celery_broker("amqp://guest:guest@127.0.0.1:5672//") == (
        "amqp://guest:guest@127.0.0.1:5672//", {})


def test_the_broker_is_herald_broker_url_when_set() -> None:
    settings = Settings(REDIS_URL="redis+cluster://h:7000",
                        HERALD_BROKER_URL="redis+sentinel://s:26379/0/herald")
    config = celery_config(settings)
    assert config["broker_url"] == "sentinel://s:26379/0"
    assert config["broker_transport_options"]["master_name"] == "herald"


def test_a_cluster_without_a_broker_stops_at_start_with_one_line() -> None:
    env = {**os.environ, "REDIS_URL": "redis+cluster://127.0.0.1:7000"}
    env.pop("HERALD_BROKER_URL", None)
    done = subprocess.run([sys.executable, "-c",
                           "from app.core.settings import get_settings; get_settings()"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "HERALD_BROKER_URL" in lines[0], done.stderr


def test_the_consoles_keys_of_a_deployment_share_one_cluster_slot() -> None:
    channel = "acme:socketio"
    keys = [counters_key(channel), rate_key(channel, 1), rate_key(channel, 2),
            heartbeats_key(channel, "web"), heartbeat_key(channel, "web", "host:1")]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert all(k.startswith("{acme:socketio}:") for k in keys)


def test_a_cluster_as_herald_broker_url_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="Celery cannot use a Redis Cluster"):
        Settings(HERALD_BROKER_URL="redis+cluster://h:7000")
