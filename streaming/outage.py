"""Riding out a Redis outage: a restart, a failover, a cut connection, a full memory lasts
seconds.

Every write that must not be lost to a short outage (a task's events, its outcome, its claim)
goes through ``ride_out``: the call is made again, with growing pauses, while Redis answers with
an error that says it is not there right now, until a limit; past it the last error is raised.
Errors that say the call itself was wrong are raised at once.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from redis.exceptions import BusyLoadingError, OutOfMemoryError, ReadOnlyError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger("agent_service.streaming.outage")
T = TypeVar("T")

#: Errors that say Redis is not there right now (restarting, loading its data, a replica not yet
#: promoted) or cannot take a write right now (its ``maxmemory`` reached under the ``noeviction``
#: policy, until keys expire or an operator frees some), not that the command was wrong. A refused
#: script wrote nothing: Redis refuses a script for memory only at its first write.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    TryAgainError,
    OutOfMemoryError,
    OSError,
)
#: Pauses between attempts during an outage (the last one repeats).
RETRY_PAUSES = (0.05, 0.1, 0.25, 0.5, 1.0)


class OutageTooLongError(Exception):
    """Redis stayed away longer than the limit; ``__cause__`` is its last error."""


def pause(attempt: int) -> float:
    return RETRY_PAUSES[min(attempt, len(RETRY_PAUSES) - 1)]


async def ride_out(call: Callable[[], Awaitable[T]], *, limit: float, what: str) -> T:
    """``await call()``; again during an outage, for up to ``limit`` seconds."""
    started = anyio.current_time()
    attempt = 0
    while True:
        try:
            return await call()
        except OUTAGE_ERRORS as exc:
            waited = anyio.current_time() - started
            if waited >= limit:
                raise OutageTooLongError(
                    f"Redis was unavailable for {waited:.0f} s ({what}): {exc!r}"
                ) from exc
            if attempt == 0:
                logger.warning("%s failed (%r); retrying while Redis is away", what, exc)
            await anyio.sleep(pause(attempt))
            attempt += 1
