"""Tokens are signed by our own HS256 signer and verified by PyJWT: what it signs must be exactly
the token PyJWT would make, and PyJWT must take it."""

import warnings

import jwt
import pytest

from app.tokens import ALGORITHM, InvalidTokenError, TokenService

SECRET = "s" * 48


@pytest.mark.parametrize("task_id", [None, "0b9c6a8e-6d8f-4f5e-9d39-2f3d6c1a7b10"])
@pytest.mark.parametrize("user_id", ["alice", "b\u00e9atrice", "\u5f20\u4f1f", "bad\udcff"])
def test_an_issued_token_is_the_one_pyjwt_makes(user_id: str, task_id: str | None) -> None:
    issued = TokenService(SECRET).issue(user_id=user_id, ttl=60, task_id=task_id)

    payload = jwt.decode(issued.token, SECRET, algorithms=[ALGORITHM])

    assert issued.token == jwt.encode(payload, SECRET, algorithm=ALGORITHM)
    assert payload["sub"] == user_id
    assert payload["jti"] == issued.claims.jti
    assert payload["exp"] == issued.claims.expires_at
    assert payload.get("task") == task_id


def test_an_issued_token_decodes_with_its_claims_and_not_with_another_secret() -> None:
    service = TokenService(SECRET)
    issued = service.issue(user_id="b\u00e9atrice", ttl=60)

    assert service.decode(issued.token) == issued.claims
    with pytest.raises(InvalidTokenError):
        TokenService("t" * 48).decode(issued.token)


def test_a_short_secret_is_warned_about_once_at_start() -> None:
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        service = TokenService("short")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        service.issue(user_id="alice", ttl=60)


def test_a_secret_pyjwt_refuses_is_refused_at_start() -> None:
    with pytest.raises(jwt.InvalidKeyError):
        TokenService("-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----")
