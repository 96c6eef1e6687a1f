"""Connect-time JWT checks: each bad token is refused with its code; good ones connect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import socketio

from testkit.clients import SocketClient, token
from testkit.system import System
from testkit.testrun import SECRET

pytestmark = pytest.mark.anyio
NOW = datetime.now(UTC)
GOOD = {"sub": "1", "email": "a@test", "role": "client"}


def forged(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode({**claims}, key, algorithm=algorithm)


def unsigned(claims: dict[str, Any]) -> str:
    return jwt.encode({**claims, "exp": NOW + timedelta(hours=1)}, None, algorithm="none")


BAD_TOKENS = {
    "missing": (None, "token_missing"),
    "empty": ("", "token_missing"),
    "malformed": ("not-a-jwt", "token_invalid"),
    "not a string": (12345, "token_invalid"),
    "wrong signature": (forged({**GOOD, "exp": NOW + timedelta(hours=1)},
                               key="another-secret-that-is-also-long-enough-000"),
                        "token_invalid"),
    "alg none": (unsigned(GOOD), "token_invalid"),
    "other algorithm": (forged({**GOOD, "exp": NOW + timedelta(hours=1)}, algorithm="HS384"),
                        "token_invalid"),
    "expired": (forged({**GOOD, "exp": NOW - timedelta(minutes=5)}), "token_expired"),
    "no exp": (forged(GOOD), "token_invalid"),
    "no role": (forged({"sub": "1", "email": "a@test", "exp": NOW + timedelta(hours=1)}),
                "token_invalid"),
    "unknown role": (forged({**GOOD, "role": "root", "exp": NOW + timedelta(hours=1)}),
                     "token_invalid"),
    "no email": (forged({"sub": "1", "role": "client", "exp": NOW + timedelta(hours=1)}),
                 "token_invalid"),
    "service token": (token("billing", "service"), "forbidden"),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_token_is_refused_with_its_code(pg_system: System, case: str) -> None:
    bad, code = BAD_TOKENS[case]
    client = SocketClient(pg_system.url, bad)  # type: ignore[arg-type]
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()
    assert client.connect_error == {"message": "Authentication error", "data": {"code": code}}


async def test_valid_token_connects_and_gets_connected_with_its_identity(pg_system: System
                                                                        ) -> None:
    api = pg_system.api()
    user_id, user_token = api.user("technician", "tech@test")
    client = SocketClient(pg_system.url, user_token)
    await client.connect()
    try:
        [hello] = await client.wait_count("connected", 1)
        heads = hello.payload.pop("positions")
        assert hello.payload == {"userId": user_id, "email": "tech@test",
                                 "role": "technician", "recovered": {}}
        assert set(heads) == {f"user-{user_id}", "technicians"}
        ack = await client.call("heartbeat")
        assert ack["ok"] is True and ack["serverTime"].endswith("Z")
    finally:
        await client.close()


async def test_bad_bearer_token_on_http_is_401_with_json_error(pg_system: System) -> None:
    api = pg_system.api()
    for header in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = api.http.patch("/api/projects/1", json={"progress": 1}, headers=header)
        assert response.status_code == 401
        assert set(response.json()["error"]) == {"code", "message"}


def test_the_hs256_key_checks_run_once_per_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from jwt.algorithms import HMACAlgorithm

    from app.portal import auth
    secret = f"{SECRET}-keys-once"  # a secret no other test decodes with
    tokens = [forged({**GOOD, "sub": sub, "exp": NOW + timedelta(hours=1)}, secret)
              for sub in ("1", "2", "3")]
    calls: list[object] = []
    checks = HMACAlgorithm.prepare_key

    def counted(self: HMACAlgorithm, key: str | bytes) -> bytes:
        calls.append(key)
        return checks(self, key)
    monkeypatch.setattr(HMACAlgorithm, "prepare_key", counted)
    assert [auth.decode_expiring(t, secret=secret)[0].sub for t in tokens] == ["1", "2", "3"]
    assert calls == [secret]


def test_a_token_signed_with_another_key_is_refused_after_the_key_was_checked() -> None:
    from app.core.errors import AuthError
    from app.portal import auth
    claims = {**GOOD, "exp": NOW + timedelta(hours=1)}
    auth.decode_expiring(forged(claims), secret=SECRET)  # the key checked and kept
    with pytest.raises(AuthError) as refused:
        auth.decode_expiring(forged(claims, key=SECRET + "-other"), secret=SECRET)
    assert refused.value.code == "token_invalid"


SEGMENTS = [b"", b"eyJhbGciOiJIUzI1NiJ9", b"QQ", b"QR", b"QUI", b"QUJ", b"QUJD", b"a", b"abcde",
            b"QQ==", b"QUI=", b"Q===", b"QQ=", b"!!!!", b"QU+/", b"QU\n", b"QU J", b"QUJD=",
            b"-_-_", b"\xc3\xa9QQ"]


@pytest.mark.parametrize("segment", SEGMENTS)
def test_a_segment_is_decoded_or_refused_as_pyjwt_does(segment: bytes) -> None:
    from app.portal import auth

    def outcome(check: Any) -> object:
        try:
            return check(segment, "payload")
        except jwt.DecodeError as exc:
            return ("DecodeError", str(exc))
    assert outcome(auth._segment) == outcome(jwt.PyJWS._decode_base64url_segment)


def test_a_valid_tokens_segments_are_checked_without_pyjwts_loop_per_character(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.errors import AuthError
    from app.portal import auth
    calls: list[bytes] = []
    library = jwt.PyJWS._decode_base64url_segment

    def counted(segment: bytes, name: str) -> bytes:
        calls.append(segment)
        return library(segment, name)
    monkeypatch.setattr(jwt.PyJWS, "_decode_base64url_segment", staticmethod(counted))
    good = forged({**GOOD, "exp": NOW + timedelta(hours=1)})
    assert auth.decode_expiring(good, secret=SECRET)[0].sub == "1"
    assert calls == []
    header, payload, signature = good.split(".")
    with pytest.raises(AuthError) as refused:  # padded: PyJWT's own check, its refusal
        auth.decode_expiring(f"{header}.{payload}==.{signature}", secret=SECRET)
    assert refused.value.code == "token_invalid"
    assert calls == [f"{payload}==".encode()]
