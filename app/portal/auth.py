"""Access tokens: HS256 JWTs with sub, email, role and exp; anything else is refused."""

from __future__ import annotations

import binascii
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.utils import base64url_decode, base64url_encode

from app.core.errors import AuthError
from app.core.ids import is_canonical_int
from app.portal.models import ROLES

ALGORITHM = "HS256"
REQUIRED = ("sub", "email", "role", "exp")
MAX_EXP = 253_402_300_799  # 9999-12-31T23:59:59Z: anything later is not a real expiry


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (client, technician, admin) or a backend service."""

    sub: str
    email: str
    role: str

    @property
    def user_id(self) -> int | None:
        """The user's id, or None for a service (whose sub names the service)."""
        if self.role == "service":
            return None
        return int(self.sub) if is_canonical_int(self.sub) else None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class _CheckedKeys(HMACAlgorithm):
    """PyJWT's HS256, its key checks (not empty, not an asymmetric key, not a JWK) run
    once per secret instead of once per token: they were half of a token's check."""

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._prepared: dict[str | bytes, bytes] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = super().prepare_key(key)  # raises for a key it refuses: not kept
            if len(self._prepared) < 16:
                self._prepared[key] = prepared
        return prepared


# What a segment of a compact JWS may hold (PyJWS's `_BASE64URL_ALPHABET`): base64url.
_BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _segment(segment: bytes, name: str) -> bytes:
    """PyJWS's `_decode_base64url_segment`, its check of each character (a generator step
    per character: a third of a token's check) done in one `bytes.translate` for a segment
    of base64url characters only, without padding: decoded, and taken only if it encodes
    back to itself, as PyJWS does. Anything else (padding, another character, a length
    that is no base64, a non-canonical last character) is PyJWS's own call: its error."""
    if len(segment) % 4 != 1 and not segment.translate(None, _BASE64URL):
        try:
            decoded = base64url_decode(segment)
        except (TypeError, binascii.Error):
            decoded = None
        if decoded is not None and base64url_encode(decoded) == segment:
            return decoded
    return jwt.PyJWS._decode_base64url_segment(segment, name)


def _decoder() -> jwt.PyJWT:
    """A PyJWT whose HS256 is `_CheckedKeys` and whose segments are checked by `_segment`
    (PyJWT's own for each where its JWS or the segment check is not there)."""
    decoder = jwt.PyJWT()
    jws: Any = getattr(decoder, "_jws", None)
    if isinstance(jws, jwt.PyJWS) and ALGORITHM in jws.get_algorithms():
        jws.unregister_algorithm(ALGORITHM)
        jws.register_algorithm(ALGORITHM, _CheckedKeys())
    if (isinstance(jws, jwt.PyJWS)
            and callable(getattr(jwt.PyJWS, "_decode_base64url_segment", None))
            and getattr(jwt.api_jws, "_BASE64URL_ALPHABET", None) == _BASE64URL):
        jws._decode_base64url_segment = _segment  # type: ignore[method-assign]
    return decoder


_DECODER = _decoder()


def mint(*, secret: str, sub: str, email: str, role: str, ttl: timedelta) -> str:
    now = datetime.now(UTC)
    claims = {"sub": str(sub), "email": email, "role": role, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


_VALID: dict[tuple[str, str], tuple[Principal, float]] = {}  # (secret, token) -> who, exp
_VALID_MAX = 4096


def decode_cached(token: Any, *, secret: str) -> Principal:
    """`decode`, remembering valid tokens until they expire: a service sends the same
    token with every request, and checking its signature again each time is CPU for
    nothing. Refusals are never remembered; at most _VALID_MAX tokens are."""
    if isinstance(token, str):
        hit = _VALID.get((secret, token))
        if hit is not None and time.time() < hit[1]:
            return hit[0]
    who, exp = _decode(token, secret)
    if len(_VALID) >= _VALID_MAX:
        _VALID.clear()
    _VALID[(secret, token)] = (who, exp)
    return who


def decode(token: Any, *, secret: str) -> Principal:
    """The principal of a valid token; AuthError with code token_missing/invalid/expired."""
    return _decode(token, secret)[0]


def decode_expiring(token: Any, *, secret: str) -> tuple[Principal, float]:
    """`decode`, and the token's expiry (a Unix time)."""
    return _decode(token, secret)


def _decode(token: Any, secret: str) -> tuple[Principal, float]:
    """(principal, expiry as a Unix time) of a valid token, else AuthError."""
    if token is None or token == "":
        raise AuthError("no token", code="token_missing")
    if not isinstance(token, str) or len(token) > 8192:
        raise AuthError("malformed token", code="token_invalid")
    try:
        claims = _DECODER.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": list(REQUIRED)}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired", code="token_expired") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {type(exc).__name__}", code="token_invalid") from None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not 0 < exp <= MAX_EXP:
        raise AuthError("invalid token expiry", code="token_invalid")
    sub, email, role = claims.get("sub"), claims.get("email"), claims.get("role")
    if not isinstance(sub, str) or not sub or not isinstance(email, str) or role not in ROLES:
        raise AuthError("invalid token claims", code="token_invalid")
    if role != "service" and not is_canonical_int(sub):
        raise AuthError("invalid token subject", code="token_invalid")
    return Principal(sub=sub, email=email, role=role), float(exp)

