"""``Idempotency-Key``: the same key and body from the same user, within a day, is one task.

The first request claims the key in Redis (``SET NX``) with the task id it is about to create
and a fingerprint of its body, and marks the claim queued once the task is; a repeat with the same
body gets that task id back (one LLM call, however often a client retries), a repeat that arrives
while the first is still creating its task gets 409 "retry in a moment", and a repeat with a
different body gets 409, since the client has mixed up two requests. A claim whose task could not
be queued is released, so the client's retry goes through. Keys are per user: two users cannot
collide, or probe each other.
"""

import hashlib
from typing import Any

import orjson
from redis.asyncio import Redis

from contract import keys

TTL_SECONDS = 86_400
MAX_KEY_LENGTH = 255


class IdempotencyConflictError(Exception):
    """The key was used for a different request."""


class InvalidIdempotencyKeyError(ValueError):
    """Empty, too long, or not printable ASCII."""


def validate_key(key: str) -> str:
    if not 0 < len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise InvalidIdempotencyKeyError(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key


def _claim_value(task_id: str, request_fingerprint: str, *, queued: bool) -> bytes:
    return orjson.dumps({"task_id": task_id, "fingerprint": request_fingerprint, "queued": queued})


def fingerprint(request: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


class IdempotencyStore:
    def __init__(self, redis: "Redis", *, ttl: int = TTL_SECONDS) -> None:
        self._redis = redis
        self._ttl = ttl

    def _key(self, user_id: str, key: str) -> str:
        return keys.idempotency(user_id, hashlib.sha256(key.encode()).hexdigest())

    async def claim(self, *, user_id: str, key: str, request_fingerprint: str, task_id: str) -> str:
        """The task of this key: ``task_id`` when the key is new, else the one it created."""
        redis_key = self._key(user_id, key)
        claim = _claim_value(task_id, request_fingerprint, queued=False)
        for _ in range(3):  # an earlier claim may expire between SET NX and GET
            if await self._redis.set(redis_key, claim, nx=True, ex=self._ttl):
                return task_id
            existing = await self._redis.get(redis_key)
            if existing is None:
                continue
            earlier = orjson.loads(existing)
            if earlier["fingerprint"] != request_fingerprint:
                raise IdempotencyConflictError(
                    "this Idempotency-Key was already used for a different request; "
                    "use a new key for a new request"
                )
            if not earlier.get("queued"):
                # The first request is still creating its task (and may yet fail): naming that
                # task now could point the client at one that never exists.
                raise IdempotencyConflictError(
                    "a request with this Idempotency-Key is still being processed; "
                    "retry in a moment"
                )
            earlier_task: str = earlier["task_id"]
            return earlier_task
        raise RuntimeError("could not claim the idempotency key")

    async def mark_queued(
        self, *, user_id: str, key: str, request_fingerprint: str, task_id: str
    ) -> None:
        """The claimed task exists and is queued: repeats may now be answered with it."""
        value = _claim_value(task_id, request_fingerprint, queued=True)
        await self._redis.set(self._key(user_id, key), value, xx=True, keepttl=True)

    async def release(self, *, user_id: str, key: str) -> None:
        await self._redis.delete(self._key(user_id, key))
