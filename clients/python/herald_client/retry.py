"""Retry policy shared by the publisher and the history reader: what to retry, how long to wait."""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

from .errors import HeraldError, error_from_body


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits in [d/2, d], d = min(cap, base * 2**n)."""

    attempts: int = 6
    base: float = 0.2
    cap: float = 5.0

    def delay(self, attempt: int) -> float:
        ceiling = float(min(self.cap, self.base * 2.0 ** attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


TRANSIENT = (httpx.TransportError,)  # connect/read/write errors, timeouts, protocol errors


def retryable_status(status: int) -> bool:
    return status >= 500


def error_for(response: httpx.Response) -> HeraldError:
    """The typed error for a non-2xx answer."""
    try:
        body = response.json()
    except ValueError:
        body = None
    retry_after = None
    header = response.headers.get("retry-after")
    if header is not None:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None
    return error_from_body(response.status_code, body, retry_after)
