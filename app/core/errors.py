"""Herald's errors: one tree, each with a stable code for clients."""

from __future__ import annotations

from typing import Any


class HeraldError(Exception):
    """Base of every error Herald raises on purpose."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class AuthError(HeraldError):
    """The caller has no valid token (missing, malformed, expired, badly signed)."""

    code = "token_invalid"
    status = 401


class Forbidden(HeraldError):
    """The caller is known but may not do this."""

    code = "forbidden"
    status = 403


class NotFound(HeraldError):
    """An id that names nothing."""

    code = "not_found"
    status = 404


class InvalidInput(HeraldError):
    """A body or argument that does not fit the contract."""

    code = "invalid"
    status = 422


class TooLarge(HeraldError):
    """A payload over one of the documented limits."""

    code = "too_large"
    status = 413


class RateLimited(HeraldError):
    """The caller went past a per-user rate limit; `retry_after` seconds until it may again."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "retryAfter": self.retry_after}


class Conflict(HeraldError):
    """The request clashes with the current state (e.g. a duplicate email)."""

    code = "conflict"
    status = 409


class Gone(HeraldError):
    """Events asked for were pruned; reload state instead."""

    code = "gone"
    status = 410


class Unavailable(HeraldError):
    """A service Herald needs for this answer (Redis) does not answer; retry later."""

    code = "unavailable"
    status = 503


class DeliveryError(HeraldError):
    """Publishing to the Socket.IO message queue failed."""

    code = "delivery_failed"
    status = 503


class TransportDown(DeliveryError):
    """The message queue is unreachable: transient, retried without counting against a stream."""


class PublishRejected(DeliveryError):
    """The message queue refused specific messages: counted as a stream's failed attempt."""

    def __init__(self, message: str, *, failed: dict[str, str]) -> None:
        super().__init__(message)
        self.failed = failed
