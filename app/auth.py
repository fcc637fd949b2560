"""API-key authentication: which user is calling.

Keys come from ``API_KEYS`` (``key:user_id`` pairs). Only their SHA-256 digests are kept in memory,
and a presented key is compared against every digest with ``hmac.compare_digest`` (no early exit),
so neither the keys nor, by timing, how much of one matched can leak.
"""

import hashlib
import hmac
from dataclasses import dataclass


class InvalidApiKeysError(ValueError):
    """``API_KEYS`` is not a comma-separated list of ``key:user_id`` pairs."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as far as authorisation is concerned."""

    user_id: str
    #: When the credential expires (a bearer token's ``exp``); None for an API key.
    expires_at: int | None = None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeyAuthenticator:
    def __init__(self, pairs: dict[str, str]) -> None:
        self._entries = [(_digest(key), user) for key, user in pairs.items()]
        self.users = frozenset(pairs.values())

    @classmethod
    def from_setting(cls, value: str) -> "ApiKeyAuthenticator":
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            key, sep, user = item.partition(":")
            if not sep or not key.strip() or not user.strip():
                raise InvalidApiKeysError(
                    "API_KEYS must be comma-separated key:user_id pairs; one entry is malformed"
                )
            pairs[key.strip()] = user.strip()
        return cls(pairs)

    def authenticate(self, presented: str | None) -> Principal | None:
        """The user of ``presented``, or None; takes the same time whichever key matches."""
        if not presented:
            return None
        digest = _digest(presented)
        found: str | None = None
        for expected, user in self._entries:
            if hmac.compare_digest(digest, expected):
                found = user
        return Principal(user_id=found) if found is not None else None
