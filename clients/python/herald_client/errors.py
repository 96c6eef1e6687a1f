"""One error tree: every error the client raises on purpose is a HeraldError."""

from __future__ import annotations

from typing import Any


class HeraldError(Exception):
    """Base of every error herald_client raises on purpose."""

    status: int | None = None

    def __init__(self, message: str, *, code: str = "error", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class AuthError(HeraldError):
    """401, or a refused connection: the token is missing, invalid or expired."""

    status = 401


class Forbidden(HeraldError):
    """403: the token is valid but may not do this (or a service token tried to connect)."""

    status = 403


class NotFound(HeraldError):
    """404 (or a not_found ack): an id or stream that names nothing or that the caller may
    not see."""

    status = 404


class Conflict(HeraldError):
    """409: the server could not store the request because of a concurrent change."""

    status = 409


class Gone(HeraldError):
    """410: the events asked for were pruned (past retention)."""

    status = 410


class TooLarge(HeraldError):
    """413: a body or an event over one of the documented limits."""

    status = 413


class Invalid(HeraldError):
    """422 (or an invalid_argument ack): the request does not fit the contract."""

    status = 422


class RateLimited(HeraldError):
    """429 (or a rate_limited ack): slow down for `retry_after` seconds."""

    status = 429

    def __init__(self, message: str, *, code: str = "rate_limited", status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after


class ServerError(HeraldError):
    """5xx answers that went on after every retry."""


class Unavailable(HeraldError):
    """The server could not be reached (connection errors, timeouts) after every retry."""


BY_STATUS: dict[int, type[HeraldError]] = {
    401: AuthError, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone, 413: TooLarge,
    422: Invalid, 429: RateLimited,
}
BY_CODE: dict[str, type[HeraldError]] = {
    "token_missing": AuthError, "token_invalid": AuthError, "token_expired": AuthError,
    "forbidden": Forbidden, "not_found": NotFound, "gone": Gone, "too_large": TooLarge,
    "invalid": Invalid, "invalid_argument": Invalid, "invalid_message": Invalid,
    "invalid_client_message_id": Invalid, "rate_limited": RateLimited,
    "conflict": Conflict, "duplicate_client_message_id": Conflict,
    "unavailable": Unavailable, "internal": ServerError,
}


def error_from_body(status: int, body: Any, retry_after: float | None = None) -> HeraldError:
    """The typed error for an HTTP answer `{"error": {"code", "message"}}` of this status."""
    error = body.get("error") if isinstance(body, dict) else None
    code = str(error.get("code", "error")) if isinstance(error, dict) else f"http_{status}"
    message = str(error.get("message", "")) if isinstance(error, dict) else f"HTTP {status}"
    if isinstance(error, dict) and retry_after is None:
        hint = error.get("retryAfter")
        retry_after = float(hint) if isinstance(hint, int | float) else None
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else HeraldError)
    if cls is RateLimited:
        return RateLimited(message, code=code, status=status, retry_after=retry_after)
    return cls(message, code=code, status=status)


def error_from_ack(error: Any) -> HeraldError:
    """The typed error for a Socket.IO error ack `{"ok": false, "error": {code, message}}`."""
    if not isinstance(error, dict):
        return HeraldError(str(error))
    code, message = str(error.get("code", "error")), str(error.get("message", ""))
    cls = BY_CODE.get(code, HeraldError)
    if cls is RateLimited:
        hint = error.get("retryAfter")
        return RateLimited(message, code=code,
                           retry_after=float(hint) if isinstance(hint, int | float) else None)
    return cls(message, code=code)
