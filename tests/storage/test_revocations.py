"""The revocation list on a real Redis."""

import pytest
from redis.asyncio import Redis

from contract.keys import REVOKED_TOKENS
from storage.revocations import RevocationList

pytestmark = pytest.mark.anyio


async def test_remove_expired_drops_only_expired_entries(redis: Redis) -> None:
    await redis.delete(REVOKED_TOKENS)
    revocations = RevocationList(redis)
    await revocations.revoke("expired-1", expires_at=1_000)
    await revocations.revoke("expired-2", expires_at=1_699)
    await revocations.revoke("just-expired", expires_at=1_900)  # within the clock-skew grace
    await revocations.revoke("live", expires_at=3_000)

    removed, remaining = await revocations.remove_expired(now=2_000)

    assert (removed, remaining) == (2, 2)
    assert await revocations.is_revoked("live")
    assert await revocations.is_revoked("just-expired")
    assert not await revocations.is_revoked("expired-1")
    assert not await revocations.is_revoked("expired-2")
    await redis.delete(REVOKED_TOKENS)
