"""Writing a running task's ``PROGRESS`` state to Celery's result backend, from its event loop.

``Task.update_state`` is a blocking call (on the shared loop it must go to a thread) that costs
three round trips to Redis (Celery reads the current state first, then writes and publishes it)
and a good share of the worker's CPU per streamed answer. When the result backend is the same
Redis the loop already talks to, the state is written the way Celery's Redis backend stores it
(``celery-task-meta-<id>``, JSON, expiring with ``CELERY_RESULT_EXPIRES``) in one ``SET`` that
the task's publisher sends with the ``progress`` event that follows it (one round trip for both,
shared with the other tasks of the loop, and dropped with the event if the task fails first);
any other backend gets ``update_state`` in a thread. Readers (polling,
``AsyncResult``) cannot tell the difference.
"""

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from streaming import keys
from streaming.publisher import TaskEventPublisher

PROGRESS = "PROGRESS"


class StateWriter(Protocol):
    async def progress(self, meta: dict[str, Any]) -> None:
        """Store ``PROGRESS`` with ``meta``, at the latest with the task's next event (not at
        all if the task fails before that event is written)."""
        ...


class RedisBackendStateWriter:
    """``PROGRESS`` stored directly in the Redis result backend the loop's client reaches."""

    def __init__(self, publisher: TaskEventPublisher, task_id: str, *, expires: int) -> None:
        self._publisher = publisher
        self._task_id = task_id
        self._key = keys.celery_task_meta(task_id)
        self._expires = expires

    async def progress(self, meta: dict[str, Any]) -> None:
        record: dict[str, Any] = {
            "status": PROGRESS,
            "result": meta,
            "traceback": None,
            "children": [],
            "date_done": None,
            "task_id": self._task_id,
        }
        self._publisher.set_with_next(self._key, orjson.dumps(record), expires=self._expires)


class CeleryStateWriter:
    """``PROGRESS`` through Celery's own ``update_state``, off the loop (any backend)."""

    def __init__(
        self,
        update_state: Callable[..., None],
        offload: Callable[[Callable[[], object]], Awaitable[object]],
    ) -> None:
        self._update_state = update_state
        self._offload = offload

    async def progress(self, meta: dict[str, Any]) -> None:
        await self._offload(lambda: self._update_state(state=PROGRESS, meta=meta))
