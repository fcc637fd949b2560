"""The token revocation list: revoked ``jti``s in a Redis sorted set, scored by expiry.

A token is only worth remembering until it would have expired anyway, so each entry carries that
time and ``remove_expired`` (the ``cleanup_token_blacklist`` task) trims by score. Lookups are one
``ZSCORE``: every request that presents a token pays a single round trip.
"""

import time

from redis.asyncio import Redis

from contract.keys import REVOKED_TOKENS

#: Seconds a revocation is kept past its token's expiry, for clocks that disagree.
CLOCK_SKEW_GRACE = 300.0


class RevocationList:
    def __init__(self, redis: "Redis") -> None:
        self._redis = redis

    async def revoke(self, jti: str, *, expires_at: int) -> None:
        await self._redis.zadd(REVOKED_TOKENS, {jti: expires_at})

    async def is_revoked(self, jti: str) -> bool:
        return await self._redis.zscore(REVOKED_TOKENS, jti) is not None

    async def remove_expired(
        self, *, now: float | None = None, grace: float = CLOCK_SKEW_GRACE
    ) -> tuple[int, int]:
        """Drop entries of tokens that expired more than ``grace`` seconds ago (a web process
        whose clock runs behind must not see a revoked token come back); returns (removed,
        remaining)."""
        cutoff = (time.time() if now is None else now) - grace
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(REVOKED_TOKENS, "-inf", f"({cutoff}")
            pipe.zcard(REVOKED_TOKENS)
            removed, remaining = await pipe.execute()
        return int(removed), int(remaining)
