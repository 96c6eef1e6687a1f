"""Settings: the one place that reads the environment."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core import names
from app.core.redisurls import celery_broker, is_cluster, parse_redis_url

# The project's directory: the default SQLite file is the same from whatever directory a
# command runs in (`herald migrate` prints the URL it used).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SQLITE = f"sqlite:///{(PROJECT_ROOT / 'var' / 'herald.db').as_posix()}"
DEV_JWT_SECRET = "herald-development-secret-change-me-0123456789"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> timedelta:
    """'90', '30s', '15m', '1h', '7d', '2w' (a bare number is seconds)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=float(value))
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 1h, 7d)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


class Settings(BaseSettings):
    """Herald's configuration, read once from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", case_sensitive=False, populate_by_name=True
    )

    environment: Annotated[str, Field(validation_alias="HERALD_ENV")] = "development"
    database_url: str = DEFAULT_SQLITE
    redis_url: str = "redis://127.0.0.1:6379/0"
    socketio_redis_url: str | None = None
    # Redis names (app/core/names.py): the namespace prefixes the channel, the queue and
    # every key; an explicit channel or queue is used as given.
    namespace: Annotated[str, Field(validation_alias="HERALD_NAMESPACE")] = ""
    socketio_channel: Annotated[
        str, Field(validation_alias=AliasChoices("HERALD_SOCKETIO_CHANNEL"))
    ] = ""
    celery_queue: Annotated[str, Field(validation_alias="HERALD_CELERY_QUEUE")] = ""
    jwt_secret: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    relay_max_attempts: Annotated[
        int, Field(ge=1, le=1000, validation_alias="HERALD_RELAY_MAX_ATTEMPTS")
    ] = 8
    relay_backoff: Annotated[
        float, Field(gt=0, le=3600, validation_alias="HERALD_RELAY_BACKOFF")
    ] = 1.0
    relay_backoff_cap: Annotated[
        float, Field(gt=0, validation_alias="HERALD_RELAY_BACKOFF_CAP")
    ] = 300.0
    retention: Annotated[timedelta, Field(validation_alias="HERALD_RETENTION")] = timedelta(days=7)
    sweep_interval: Annotated[
        float, Field(gt=0, validation_alias="HERALD_SWEEP_INTERVAL")
    ] = 1.0
    log_level: Annotated[str, Field(validation_alias="HERALD_LOG_LEVEL")] = "INFO"
    # Workers and web nodes write a heartbeat to Redis this often; it expires after three
    # intervals (the operators' console lists what is alive: GET /api/admin/nodes).
    heartbeat_interval: Annotated[
        float, Field(gt=0, le=300, validation_alias="HERALD_HEARTBEAT_INTERVAL")
    ] = 5.0
    # Lines a second per kind (logger and message) from the loggers clients reach; 0: no limit.
    log_rate: Annotated[int, Field(ge=0, validation_alias="HERALD_LOG_RATE")] = 100
    # PostgreSQL: a database that is down costs a request seconds and a 503, never a hang.
    db_connect_timeout: Annotated[
        float, Field(gt=0, le=300, validation_alias="HERALD_DB_CONNECT_TIMEOUT")
    ] = 5.0
    db_statement_timeout: Annotated[
        float, Field(ge=0, validation_alias="HERALD_DB_STATEMENT_TIMEOUT")
    ] = 30.0
    # Celery's remote control (pidbox) lives on an auto-delete queue whose clean-up can
    # crash a worker when Redis goes away (kombu: AttributeError 'hostname'); off unless
    # asked for (Flower's inspect/control and `celery inspect` need it).
    worker_remote_control: Annotated[
        bool, Field(validation_alias="HERALD_WORKER_REMOTE_CONTROL")
    ] = False

    # Hostile clients (issue 8): bodies, origins, sessions and per-user rates are bounded.
    max_body: Annotated[int, Field(ge=1024, validation_alias="HERALD_MAX_BODY")] = 8 * 2**20
    max_small_body: Annotated[
        int, Field(ge=4096, validation_alias="HERALD_MAX_SMALL_BODY")
    ] = 64 * 1024
    cors_origins: Annotated[str | None, Field(validation_alias="HERALD_CORS_ORIGINS")] = None
    connect_timeout: Annotated[
        float, Field(gt=0, le=600, validation_alias="HERALD_CONNECT_TIMEOUT")
    ] = 10.0
    rate_messages: Annotated[str, Field(validation_alias="HERALD_RATE_MESSAGES")] = "60/minute"
    rate_typing: Annotated[str, Field(validation_alias="HERALD_RATE_TYPING")] = "300/minute"
    rate_joins: Annotated[str, Field(validation_alias="HERALD_RATE_JOINS")] = "600/minute"
    rate_connects: Annotated[str, Field(validation_alias="HERALD_RATE_CONNECTS")] = "60/minute"
    rate_writes: Annotated[
        str, Field(validation_alias="HERALD_RATE_WRITES")
    ] = "10/second;300/minute"
    rate_inbox: Annotated[str, Field(validation_alias="HERALD_RATE_INBOX")] = "600/minute"
    max_connections: Annotated[
        int, Field(ge=1, validation_alias="HERALD_MAX_CONNECTIONS_PER_USER")
    ] = 50
    # Presence (issue 18): how long a crashed web node's users stay present, in seconds.
    presence_ttl: Annotated[
        float, Field(gt=0, le=3600, validation_alias="HERALD_PRESENCE_TTL")
    ] = 30.0
    # What one socket may cost a web node (issue 15; app/gateway/bounds.py).
    socket_queue_bytes: Annotated[
        int, Field(ge=65536, validation_alias="HERALD_SOCKET_QUEUE_BYTES")
    ] = 2 * 2**20
    socket_queue_packets: Annotated[
        int, Field(ge=100, validation_alias="HERALD_SOCKET_QUEUE_PACKETS")
    ] = 5000
    socket_drain_timeout: Annotated[
        float, Field(gt=0, le=600, validation_alias="HERALD_SOCKET_DRAIN_TIMEOUT")
    ] = 20.0
    rate_unknown_events: Annotated[
        int, Field(ge=1, validation_alias="HERALD_RATE_UNKNOWN_EVENTS")
    ] = 60
    identity_recheck: Annotated[
        float, Field(gt=0, le=3600, validation_alias="HERALD_IDENTITY_RECHECK")
    ] = 5.0

    # The web node's HTTP server (issue 15): request heads bounded in size, count and time.
    max_header_bytes: Annotated[
        int, Field(ge=4096, le=2**20, validation_alias="HERALD_MAX_HEADER_BYTES")
    ] = 32 * 1024
    max_headers: Annotated[
        int, Field(ge=10, le=10_000, validation_alias="HERALD_MAX_HEADERS")
    ] = 100
    header_timeout: Annotated[
        float, Field(gt=0, le=600, validation_alias="HERALD_HEADER_TIMEOUT")
    ] = 10.0
    keep_alive: Annotated[int, Field(ge=1, le=3600, validation_alias="HERALD_KEEP_ALIVE")] = 5

    # Web node performance (issue 11).
    fast_fanout: Annotated[bool, Field(validation_alias="HERALD_FAST_FANOUT")] = True
    ws_compression: Annotated[bool, Field(validation_alias="HERALD_WS_COMPRESSION")] = False
    # Issue 16: events (and typing) go on each stream's own channel (SPUBLISH), which only
    # the web nodes holding a socket in that room subscribe to; false: the shared channel.
    room_channels: Annotated[bool, Field(validation_alias="HERALD_ROOM_CHANNELS")] = True
    # Issue 16: Celery's broker (Redis, Redis Sentinel, amqp://); default: REDIS_URL unless
    # that is a Redis Cluster (Celery cannot use one).
    broker_url: Annotated[str | None, Field(validation_alias="HERALD_BROKER_URL")] = None

    @field_validator("rate_messages", "rate_typing", "rate_joins", "rate_connects", "rate_writes",
                     "rate_inbox")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"not a rate: {value!r} (use e.g. 60/minute)") from None
        return value

    @field_validator("retention", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("database_url", "redis_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError(f"not a URL: {value!r}")
        return value

    @field_validator("redis_url", "socketio_redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value is not None:
            parse_redis_url(value)
        return value

    @model_validator(mode="after")
    def _broker(self) -> Settings:
        if self.broker_url is None and is_cluster(self.redis_url):
            raise ValueError("REDIS_URL is a Redis Cluster, which Celery cannot use as its "
                             "broker: set HERALD_BROKER_URL (redis://, redis+sentinel:// "
                             "or amqp://)")
        if self.broker_url is not None:
            celery_broker(self.broker_url)  # ValueError: a cluster, or a bad Sentinel URL
        return self

    @field_validator("environment")
    @classmethod
    def _env(cls, value: str) -> str:
        if value not in {"development", "test", "production"}:
            raise ValueError("must be development, test or production")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if value and names.clean(value) != value:
            raise ValueError("use letters, digits, '_', '.' and '-' only "
                             f"(at most {names.MAX_NAMESPACE})")
        return value

    @model_validator(mode="after")
    def _names(self) -> Settings:
        self.namespace = self.namespace or names.derive_namespace(self.database_url)
        self.socketio_channel = self.socketio_channel or names.channel(self.namespace)
        self.celery_queue = self.celery_queue or names.queue(self.namespace)
        return self

    @model_validator(mode="after")
    def _secret(self) -> Settings:
        if self.jwt_secret is None:
            if self.environment == "production":
                raise ValueError("JWT_SECRET is required outside development")
            self.jwt_secret = DEV_JWT_SECRET
        elif len(self.jwt_secret) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters (HS256 key)")
        return self

    @property
    def secret(self) -> str:
        assert self.jwt_secret is not None
        return self.jwt_secret

    @property
    def celery_broker(self) -> tuple[str, dict[str, Any]]:
        """Celery's broker URL and its extra transport options (a Sentinel's master name)."""
        return celery_broker(self.broker_url or self.redis_url)

    @property
    def sio_redis_url(self) -> str:
        return self.socketio_redis_url or self.redis_url

    @property
    def db_timeouts(self) -> dict[str, float]:
        """`make_engine(url, **settings.db_timeouts)`."""
        return {"connect_timeout": self.db_connect_timeout,
                "statement_timeout": self.db_statement_timeout}

    @property
    def clearly_development(self) -> bool:
        """A test run, or development with the built-in key; a node with a key of its own
        is treated as deployed whatever HERALD_ENV says (or leaves unsaid)."""
        return self.environment == "test" or (
            self.environment == "development" and self.secret == DEV_JWT_SECRET)

    @property
    def allowed_origins(self) -> list[str] | str | None:
        """Socket.IO's cors_allowed_origins: the listed ones; by default any only when
        clearly in development, else none but the page's own (None: same origin)."""
        if self.cors_origins is None:
            return "*" if self.clearly_development else None
        listed = [o.strip() for o in self.cors_origins.split(",") if o.strip()]
        return "*" if listed == ["*"] else listed

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _one_line(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "settings"
        parts.append(f"{where.upper()}: {item['msg']}")
    return "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; a bad value exits with one line, not a traceback."""
    try:
        return Settings()
    except ValidationError as error:
        sys.stderr.write(f"herald: invalid configuration: {_one_line(error)}\n")
        raise SystemExit(2) from None
