"""Per-user caps, shared by every web process through Redis: one user cannot starve another or
exhaust the service (OWASP API4).

- **Active tasks** (``MAX_ACTIVE_TASKS_PER_USER``): queued, running or retrying. A submit takes a
  slot, atomically with the check, in the script that accepts the task (``app.acceptance``); the
  task gives it back when it ends, whatever way it ends (the worker's outcome round trip), and a
  submit that fails gives it back at once. Urgent tasks
  (priority ``URGENT_PRIORITY`` or above) have a smaller cap of their own
  (``MAX_URGENT_TASKS_PER_USER``): a priority that anyone may set must not let one user jump
  every queue with everything. A slot whose task vanished (Redis lost it, a web process died
  between two steps) is found and freed by the workers' recovery within a few seconds.
- **Open event streams** (``MAX_STREAMS_PER_USER``): a stream holds a slot that lapses unless
  its web process renews it (every ``STREAM_SLOT_RENEW`` seconds): a web process that dies
  frees its slots within ``STREAM_SLOT_TTL``.
- **Token mints** (``MAX_TOKEN_MINTS_PER_MINUTE``): counted per calendar minute.

A refusal is a ``429`` with ``Retry-After`` and a sentence naming the cap. A cap of 0 is none.
"""

import asyncio
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from contract import keys

#: Priorities from this one up are urgent (0-9, 9 most urgent).
URGENT_PRIORITY = 7
#: Seconds an open stream's slot lasts unless its web process renews it, and how often it does.
STREAM_SLOT_TTL = 60
STREAM_SLOT_RENEW = 20
#: What a refusal of an active-task slot suggests: a slot frees when one of the user's tasks
#: ends, which nobody can tell in advance.
ACTIVE_RETRY_AFTER = 5

# KEYS: the user's streams. ARGV: stream id, now, ttl, cap. Lapsed slots are dropped first.
_OPEN_STREAM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if tonumber(ARGV[4]) > 0 and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.ceil(tonumber(oldest[2]) - tonumber(ARGV[2]))}
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return {1, 0}
"""


class CapReachedError(Exception):
    """A per-user cap refuses the request (429)."""

    def __init__(self, detail: str, *, cap: str, limit: int, retry_after: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.cap = cap
        self.limit = limit
        self.retry_after = max(1, retry_after)


@dataclass(frozen=True, slots=True)
class CapLimits:
    active_tasks: int
    urgent_tasks: int
    streams: int
    token_mints_per_minute: int


@dataclass(frozen=True, slots=True)
class StreamSlot:
    """A stream's slot among its user's; ``close`` gives it back (once, whatever it is called)."""

    caps: "UserCaps"
    user_id: str
    stream_id: str

    async def close(self) -> None:
        await self.caps._close_stream(self.user_id, self.stream_id)


class UserCaps:
    def __init__(self, redis: "Redis", *, limits: CapLimits) -> None:
        self._redis = redis
        self.limits = limits
        self._open_stream = redis.register_script(_OPEN_STREAM)
        #: This process's open stream slots: (user, stream id), renewed while open.
        self._streams: set[tuple[str, str]] = set()

    async def open_stream(self, user_id: str) -> "StreamSlot":
        """One of the user's stream slots (refused past the cap); close it when the stream
        ends."""
        stream_id = uuid.uuid4().hex
        now = time.time()
        allowed, wait = await self._open_stream(
            keys=[keys.user_streams(user_id)],
            args=[stream_id, now, STREAM_SLOT_TTL, self.limits.streams],
        )
        if not allowed:
            raise CapReachedError(
                f"you have {self.limits.streams} event streams open, the most one user may "
                "have (MAX_STREAMS_PER_USER); close one first",
                cap="streams",
                limit=self.limits.streams,
                retry_after=int(wait),
            )
        self._streams.add((user_id, stream_id))
        return StreamSlot(self, user_id, stream_id)

    async def _close_stream(self, user_id: str, stream_id: str) -> None:
        if (user_id, stream_id) not in self._streams:
            return
        self._streams.discard((user_id, stream_id))
        with anyio.CancelScope(shield=True), suppress(RedisError, OSError):
            await self._redis.zrem(keys.user_streams(user_id), stream_id)

    async def count_token_mint(self, user_id: str) -> None:
        """Count one token minted by the user this minute, or refuse past the cap."""
        limit = self.limits.token_mints_per_minute
        if limit <= 0:
            return
        now = time.time()
        window = int(now // 60)
        key = keys.user_token_mints(user_id, window)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            minted, _ = await pipe.execute()
        if int(minted) > limit:
            raise CapReachedError(
                f"you minted {limit} tokens this minute, the most one user may "
                "(MAX_TOKEN_MINTS_PER_MINUTE)",
                cap="token_mints",
                limit=limit,
                retry_after=int((window + 1) * 60 - now) + 1,
            )

    async def renew_streams_forever(self) -> None:
        """Keep this process's open stream slots from lapsing (run in the lifespan)."""
        while True:
            await asyncio.sleep(STREAM_SLOT_RENEW)
            held = list(self._streams)
            if not held:
                continue
            lapse = time.time() + STREAM_SLOT_TTL
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for user_id, stream_id in held:
                        pipe.zadd(keys.user_streams(user_id), {stream_id: lapse}, xx=True)
                    await pipe.execute()
            except (RedisError, OSError):
                continue  # Redis away: the next pass renews them
