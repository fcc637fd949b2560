"""Short-lived signed tokens (JWT, HS256), and their revocation.

Two kinds, told apart by ``scope``:

- access tokens (``scope: api``), from ``POST /api/v1/auth/token``: a bearer credential for every
  endpoint, in the ``Authorization`` header;
- task tokens (``scope: task:events``): open one task's event stream and nothing else. The submit
  response's ``stream_url`` carries one in ``?token=`` because a browser's ``EventSource``
  cannot send headers; ``POST /api/v1/auth/token`` with a ``task_id`` issues another.

Every token has a ``jti`` and an ``exp``; ``POST /api/v1/auth/revoke`` puts the ``jti`` on the
revocation list (``storage.revocations``) until ``exp``, and a revoked token is refused
everywhere. Outside production a missing ``TOKEN_SECRET`` is replaced by a random one per process
(tokens then die with it).
"""

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
import warnings
from dataclasses import dataclass

import jwt
from jwt.algorithms import HMACAlgorithm

from storage.revocations import RevocationList

ALGORITHM = "HS256"
ACCESS_SCOPE = "api"
TASK_SCOPE = "task:events"


class InvalidTokenError(Exception):
    """Forged, expired, revoked or malformed: the caller is not authenticated."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: str
    jti: str
    expires_at: int
    task_id: str | None  # set on task tokens: the one task whose stream it opens

    @property
    def scope(self) -> str:
        return ACCESS_SCOPE if self.task_id is None else TASK_SCOPE


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: TokenClaims


class TokenService:
    def __init__(self, secret: str | None, *, revocations: RevocationList | None = None) -> None:
        self._secret = secret or secrets.token_urlsafe(48)
        # The signing key as PyJWT prepares it: a PEM-looking secret is refused, and a short one
        # warned about, here, once, where jwt.encode does both for every token.
        algorithm = HMACAlgorithm(HMACAlgorithm.SHA256)
        self._key: bytes = algorithm.prepare_key(self._secret)
        short = algorithm.check_key_length(self._key)
        if short:
            warnings.warn(short, jwt.InsecureKeyLengthWarning, stacklevel=2)
        self._revocations = revocations

    def bind(self, revocations: RevocationList) -> "TokenService":
        """The same signer, checking ``revocations`` (opened in the app's lifespan)."""
        return TokenService(self._secret, revocations=revocations)

    def issue(self, *, user_id: str, ttl: int, task_id: str | None = None) -> IssuedToken:
        now = int(time.time())
        claims = TokenClaims(
            user_id=user_id, jti=uuid.uuid4().hex, expires_at=now + ttl, task_id=task_id
        )
        payload: dict[str, object] = {
            "sub": user_id,
            "scope": claims.scope,
            "iat": now,
            "exp": claims.expires_at,
            "jti": claims.jti,
        }
        if task_id is not None:
            payload["task"] = task_id
        return IssuedToken(_sign(payload, self._key), claims)

    def decode(self, token: str, *, allow_expired: bool = False) -> TokenClaims:
        """The token's claims if we signed it (expiry checked unless ``allow_expired``)."""
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={
                    "require": ["sub", "scope", "exp", "jti"],
                    "verify_exp": not allow_expired,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(str(exc)) from exc
        user, jti, exp = payload["sub"], payload["jti"], payload["exp"]
        scope, task = payload["scope"], payload.get("task")
        if not isinstance(user, str) or not isinstance(jti, str) or not isinstance(exp, int):
            raise InvalidTokenError("malformed claims")
        if scope == TASK_SCOPE and isinstance(task, str):
            return TokenClaims(user_id=user, jti=jti, expires_at=exp, task_id=task)
        if scope == ACCESS_SCOPE and task is None:
            return TokenClaims(user_id=user, jti=jti, expires_at=exp, task_id=None)
        raise InvalidTokenError("unknown token scope")

    async def verify(self, token: str) -> TokenClaims:
        """Decode ``token`` and refuse it if it was revoked."""
        claims = self.decode(token)
        if self._revocations is not None and await self._revocations.is_revoked(claims.jti):
            raise InvalidTokenError("token revoked")
        return claims

    async def revoke(self, claims: TokenClaims) -> None:
        if self._revocations is None:
            raise RuntimeError("no revocation list bound")
        await self._revocations.revoke(claims.jti, expires_at=claims.expires_at)


#: The JOSE header of every token, as PyJWT writes it (its keys sorted), encoded once.
_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def _sign(payload: dict[str, object], key: bytes) -> str:
    """``payload`` signed with HS256: byte for byte the token ``jwt.encode`` makes (its JSON
    too, non-ASCII escaped), which PyJWT verifies. PyJWT prepares and checks the key again at
    every call, which costs more than the signing (bench/README.md, "A submit below FastAPI")."""
    claims = json.dumps(payload, separators=(",", ":")).encode()
    signing_input = _HEADER + b"." + base64.urlsafe_b64encode(claims).rstrip(b"=")
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
