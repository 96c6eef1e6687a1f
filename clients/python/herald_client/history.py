"""A stream's history over HTTP (`GET /api/streams/{stream}/events`): gap repair and heads;
and `get` for the user's other reads (the inbox)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx

from .errors import AuthError, HeraldError, Unavailable
from .retry import TRANSIENT, Backoff, error_for, retryable_status
from .types import Event, Meta, Position

FAR_AFTER = 2**62  # asks for no events, only the head
PAGE = 1000


class History:
    """Reads events after an offset; refreshes the token once on a 401."""

    def __init__(self, url: str, token: Callable[[bool], Awaitable[str]], *,
                 http: httpx.AsyncClient | None = None,
                 backoff: Backoff | None = None) -> None:
        self.url = url.rstrip("/")
        self._token = token  # token(fresh): the current token, or a new one when fresh
        self._http = http or httpx.AsyncClient(timeout=10.0)
        self._own = http is None
        self.backoff = backoff or Backoff(attempts=3)

    async def page(self, stream: str, after: int, limit: int = PAGE
                   ) -> tuple[list[Event], Position]:
        """Up to `limit` events with offset > `after`, and the stream's head.

        Raises Gone when they were pruned, Forbidden/NotFound/AuthError as answered,
        Unavailable when the server cannot be reached after a few attempts.
        """
        body = await self.get(f"/api/streams/{quote(stream, safe='')}/events",
                              {"after": after, "limit": limit})
        head = Position.from_dict(body["head"])
        events = []
        for item in body["events"]:
            meta = Meta.parse(item.get("meta"))
            if meta is not None:
                events.append(Event(str(item["type"]), item.get("payload"), meta))
        return events, head

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET `path` of the API as the user: its JSON body. A 401 gets one retry with a
        fresh token; transport failures and 5xx a few retries; other errors raise typed."""
        fresh, attempt = False, 0
        while True:
            token = await self._token(fresh)
            try:
                response = await self._http.get(f"{self.url}{path}", params=params,
                                                headers={"Authorization": f"Bearer {token}"})
            except TRANSIENT as exc:
                error: HeraldError = Unavailable(f"{self.url}: {type(exc).__name__}: {exc}",
                                                 code="unavailable")
            else:
                if response.status_code == 200:
                    return response.json()
                error = error_for(response)
                if isinstance(error, AuthError) and not fresh:
                    fresh = True  # the token may have just expired: once more with a new one
                    continue
                if not retryable_status(response.status_code):
                    raise error
            if attempt + 1 >= self.backoff.attempts:
                raise error
            await asyncio.sleep(self.backoff.delay(attempt))
            attempt += 1

    async def head(self, stream: str) -> Position:
        """The stream's head (and a check that the caller may read it)."""
        _events, head = await self.page(stream, FAR_AFTER, 1)
        return head

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()
