"""Short-lived signed tokens that open one task's event stream, for clients without headers.

A browser's ``EventSource`` cannot send ``X-API-Key``, so the submit response's ``stream_url``
carries ``?token=``: a JWT (HS256) naming the user and the one task it may stream, with an expiry
long enough to outlive the stream's reconnects. It opens nothing else. Outside production a
missing ``TOKEN_SECRET`` is replaced by a random one per process (tokens then die with it).
"""

import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

from app.auth import Principal

ALGORITHM = "HS256"
SCOPE = "task:events"


class InvalidStreamTokenError(Exception):
    """Forged, expired or malformed: the caller is not authenticated."""


@dataclass(frozen=True, slots=True)
class StreamGrant:
    principal: Principal
    task_id: str


class StreamTokenSigner:
    def __init__(self, secret: str | None, *, ttl: int) -> None:
        self._secret = secret or secrets.token_urlsafe(48)
        self._ttl = ttl

    def issue(self, *, user_id: str, task_id: str) -> str:
        now = int(time.time())
        claims = {
            "sub": user_id,
            "task": task_id,
            "scope": SCOPE,
            "iat": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> StreamGrant:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "task", "scope", "exp", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidStreamTokenError(str(exc)) from exc
        if claims.get("scope") != SCOPE:
            raise InvalidStreamTokenError("not a stream token")
        user, task = claims["sub"], claims["task"]
        if not isinstance(user, str) or not isinstance(task, str):
            raise InvalidStreamTokenError("malformed claims")
        return StreamGrant(principal=Principal(user_id=user), task_id=task)
