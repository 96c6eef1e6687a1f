"""Publishing events from a backend service over HTTP (`POST /api/events`, service token).

Every event carries an idempotency key (a fresh UUID when the caller gives none), and a
retry sends the very same body: a request that reached the server but whose answer was
lost is stored once. Connection errors, timeouts and 5xx are retried with exponential
backoff and jitter; 4xx raise their typed error at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx

from .errors import HeraldError, ServerError, Unavailable
from .retry import TRANSIENT, Backoff, error_for, retryable_status
from .types import EventSpec, Published, TokenSource, resolve

log = logging.getLogger("herald_client.publisher")
MAX_BATCH = 1000


def _body(spec: EventSpec | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        spec = EventSpec(stream=spec["stream"], type=spec["type"], data=spec.get("data", {}),
                         idempotency_key=spec.get("idempotency_key")
                         or spec.get("idempotencyKey"))
    return {"stream": spec.stream, "type": spec.type, "data": spec.data,
            "idempotencyKey": spec.idempotency_key or str(uuid.uuid4())}


def _published(item: Any) -> Published:
    return Published(str(item["id"]), str(item["stream"]), int(item["offset"]),
                     bool(item.get("duplicate", False)))


def _chunks(bodies: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [bodies[i:i + MAX_BATCH] for i in range(0, len(bodies), MAX_BATCH)]


class _Attempts:
    """Bookkeeping of one request's attempts: what to raise when they run out."""

    def __init__(self, backoff: Backoff, what: str) -> None:
        self.backoff, self.what, self.n = backoff, what, 0
        self.last: HeraldError | None = None

    def failed(self, error: HeraldError) -> float | None:
        """The delay before the next attempt, or None when there is none left."""
        self.last = error
        log.info("publish attempt failed what=%s attempt=%d error=%s", self.what, self.n + 1,
                 error.code)
        if self.n + 1 >= self.backoff.attempts:
            return None
        delay = self.backoff.delay(self.n)
        self.n += 1
        return delay


def _transient(exc: Exception, url: str) -> HeraldError:
    return Unavailable(f"{url}: {type(exc).__name__}: {exc}", code="unavailable")


class Publisher:
    """Synchronous publisher (httpx.Client). `token` is a string or a callable returning one."""

    def __init__(self, url: str, token: str | Callable[[], str], *,
                 backoff: Backoff | None = None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.backoff = backoff or Backoff()
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def publish(self, stream: str, type: str, data: dict[str, Any], *,
                idempotency_key: str | None = None) -> Published:
        """Append one event; returns its id and offset (the first event's, for a known key)."""
        body = _body(EventSpec(stream, type, data, idempotency_key))
        return _published(self._post(body))

    def publish_many(self, events: Iterable[EventSpec | Mapping[str, Any]]) -> list[Published]:
        """Append events in order; each run of up to 1000 is stored all or nothing."""
        out: list[Published] = []
        for chunk in _chunks([_body(e) for e in events]):
            out.extend(_published(item) for item in self._post(chunk))
        return out

    def _post(self, body: Any) -> Any:
        attempts = _Attempts(self.backoff, "events")
        while True:
            token = self._token() if callable(self._token) else self._token
            try:
                response = self._http.post("/api/events", json=body,
                                           headers={"Authorization": f"Bearer {token}"})
            except TRANSIENT as exc:
                error: HeraldError = _transient(exc, self.url)
            else:
                if response.status_code < 300:
                    return response.json()
                error = error_for(response)
                if not retryable_status(response.status_code):
                    raise error
            delay = attempts.failed(error)
            if delay is None:
                raise error
            time.sleep(delay)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPublisher:
    """The same over httpx.AsyncClient; `token` may be a sync or async callable."""

    def __init__(self, url: str, token: str | TokenSource, *,
                 backoff: Backoff | None = None, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.backoff = backoff or Backoff()
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport)

    async def publish(self, stream: str, type: str, data: dict[str, Any], *,
                      idempotency_key: str | None = None) -> Published:
        body = _body(EventSpec(stream, type, data, idempotency_key))
        return _published(await self._post(body))

    async def publish_many(self, events: Iterable[EventSpec | Mapping[str, Any]]
                           ) -> list[Published]:
        out: list[Published] = []
        for chunk in _chunks([_body(e) for e in events]):
            out.extend(_published(item) for item in await self._post(chunk))
        return out

    async def _post(self, body: Any) -> Any:
        attempts = _Attempts(self.backoff, "events")
        while True:
            token = await resolve(self._token) if callable(self._token) else self._token
            try:
                response = await self._http.post("/api/events", json=body,
                                                 headers={"Authorization": f"Bearer {token}"})
            except TRANSIENT as exc:
                error: HeraldError = _transient(exc, self.url)
            else:
                if response.status_code < 300:
                    return response.json()
                error = error_for(response)
                if not retryable_status(response.status_code):
                    raise error
            delay = attempts.failed(error)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncPublisher", "Publisher", "ServerError"]
