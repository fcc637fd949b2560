"""Runs a task's async work on an anyio event loop, with the task's time limit enforced inside it.

Today each task gets a fresh loop (``anyio.run``): it works in every Celery pool (prefork, solo,
threads) and everything the call opens (HTTP and Redis clients) is opened and closed inside that
loop. The time limit is a cancel scope rather than Celery's signal-based limits, because the threads
pool ignores those; running out of time raises ``AgentTimeoutError`` after the call has been
cancelled (its HTTP stream closed).
"""

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from worker.errors import AgentTimeoutError

T = TypeVar("T")


def run_with_time_limit(fn: Callable[[], Awaitable[T]], *, time_limit: float) -> T:
    """Run ``fn()`` on a fresh event loop; cancel it after ``time_limit`` seconds."""

    async def bounded() -> T:
        with anyio.move_on_after(time_limit):
            return await fn()
        raise AgentTimeoutError(
            f"the agent did not finish within its time limit of {time_limit:g} s"
        )

    return anyio.run(bounded)
