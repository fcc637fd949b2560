"""API-key authentication from ``API_KEYS``."""

from collections.abc import Iterator

import pytest

from app.auth import ApiKeyAuthenticator, InvalidApiKeysError, Principal

KEY_ALICE = "sk-alice-7f3a9c1e2b"
KEY_BOB = "sk-bob-4d8e6f0a1c"


@pytest.fixture
def authenticator() -> ApiKeyAuthenticator:
    return ApiKeyAuthenticator.from_setting(f"{KEY_ALICE}:alice, {KEY_BOB}:bob")


def test_authenticate_returns_each_keys_user_when_key_is_known(
    authenticator: ApiKeyAuthenticator,
) -> None:
    assert authenticator.authenticate(KEY_ALICE) == Principal(user_id="alice")
    assert authenticator.authenticate(KEY_BOB) == Principal(user_id="bob")


@pytest.mark.parametrize(
    "presented",
    [None, "", "sk-alice", KEY_ALICE + "x", KEY_ALICE.upper(), f" {KEY_ALICE}", "alice"],
)
def test_authenticate_refuses_when_key_is_wrong_or_missing(
    authenticator: ApiKeyAuthenticator, presented: str | None
) -> None:
    assert authenticator.authenticate(presented) is None


def test_authenticate_refuses_everything_when_setting_is_empty() -> None:
    empty = ApiKeyAuthenticator.from_setting("")

    assert empty.authenticate(KEY_ALICE) is None
    assert empty.authenticate("") is None


def test_from_setting_ignores_blank_entries_and_whitespace() -> None:
    authenticator = ApiKeyAuthenticator.from_setting(f" , {KEY_ALICE} : alice ,,")

    assert authenticator.authenticate(KEY_ALICE) == Principal(user_id="alice")


@pytest.mark.parametrize(
    "value", ["k1", "k1:", ":bob", "k1:alice,k2", "k1:alice, :bob", "k1:  ", "  :alice"]
)
def test_from_setting_raises_when_an_entry_is_malformed(value: str) -> None:
    with pytest.raises(InvalidApiKeysError, match="key:user_id pairs"):
        ApiKeyAuthenticator.from_setting(value)


def _leaves(value: object, depth: int = 0) -> Iterator[object]:
    if depth > 5:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(key, depth + 1)
            yield from _leaves(item, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _leaves(item, depth + 1)
    else:
        yield value


def _attributes(obj: object) -> dict[str, object]:
    found = dict(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if hasattr(obj, name):
                found[name] = getattr(obj, name)
    return found


def test_authenticator_keeps_no_key_in_clear(authenticator: ApiKeyAuthenticator) -> None:
    attributes = _attributes(authenticator)
    assert attributes, "the authenticator must hold its entries somewhere"

    for leaf in _leaves(attributes):
        if isinstance(leaf, str):
            assert KEY_ALICE not in leaf
            assert KEY_BOB not in leaf
        elif isinstance(leaf, bytes):
            assert KEY_ALICE.encode() not in leaf
            assert KEY_BOB.encode() not in leaf
        assert KEY_ALICE not in repr(leaf)
        assert KEY_BOB not in repr(leaf)
    assert KEY_ALICE not in repr(authenticator)
