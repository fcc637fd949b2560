"""The worker's connections to task event logs.

Inside a task's event loop, ``open_task_publisher`` opens an async Redis client bound to that loop
and the publisher that coalesces chunks; both are closed when the call ends. Celery's outcome
hooks run outside any loop, after the result is stored, so they publish the terminal event with
a blocking client shared by the process: a client that sees ``result`` can poll and find the
same result.
"""

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from redis.asyncio import Redis

from streaming.event_log import BlockingEventLog, EventLog, NewEvent
from streaming.publisher import TaskEventPublisher
from worker.logs import log_event
from worker.settings import WorkerSettings

CLIENT_NAME = "agent-service:worker"
logger = logging.getLogger("agent_service.worker.stream")

_blocking_log: BlockingEventLog | None = None
_blocking_log_lock = threading.Lock()


@asynccontextmanager
async def open_task_publisher(
    settings: WorkerSettings, task_id: str
) -> AsyncIterator[TaskEventPublisher]:
    client = Redis.from_url(
        settings.redis_url_normalised, client_name=CLIENT_NAME, socket_connect_timeout=5
    )
    try:
        log = EventLog(client, maxlen=settings.event_log_maxlen, ttl=settings.task_data_ttl)
        async with TaskEventPublisher(
            log, task_id, coalesce_window=settings.stream_coalesce_window
        ) as publisher:
            yield publisher
    finally:
        await client.aclose()


def _process_log(settings: WorkerSettings) -> BlockingEventLog:
    global _blocking_log
    if _blocking_log is None:
        with _blocking_log_lock:
            if _blocking_log is None:
                client = redis.Redis.from_url(
                    settings.redis_url_normalised,
                    client_name=CLIENT_NAME,
                    socket_connect_timeout=5,
                )
                _blocking_log = BlockingEventLog(
                    client, maxlen=settings.event_log_maxlen, ttl=settings.task_data_ttl
                )
    return _blocking_log


def publish_from_hook(settings: WorkerSettings, task_id: str, events: list[NewEvent]) -> None:
    """Publish from a Celery hook; a Redis failure is logged, never raised (the result stands)."""
    try:
        _process_log(settings).append(task_id, events)
    except redis.RedisError as exc:
        log_event(
            logger,
            logging.ERROR,
            "stream_publish_failed",
            task_id=task_id,
            events=",".join(kind.value for kind, _ in events),
            error=repr(exc),
        )


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The ``error`` event's payload: what polling shows as ``error``."""
    return {"type": type(exc).__name__, "message": str(exc)}
