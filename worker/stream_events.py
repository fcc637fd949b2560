"""Publishing from Celery's outcome hooks, which run outside any event loop.

They run after Celery has stored the task's state, so they publish the terminal event with a
blocking Redis client shared by the process: a client that sees ``result`` in the stream and then
polls finds the same result. (Inside the loop, the task publishes through ``TaskEventPublisher``
on the loop's own client.)
"""

import logging
import threading
import time
from typing import Any

import orjson
import redis

from streaming import keys
from streaming.event_log import BlockingEventLog, NewEvent
from streaming.events import EventType
from worker.errors import AgentError
from worker.logs import log_event
from worker.settings import WorkerSettings

CLIENT_NAME = "agent-service:worker:hooks"
logger = logging.getLogger("agent_service.worker.stream")

_blocking_log: BlockingEventLog | None = None
_blocking_log_lock = threading.Lock()


def _process_log(settings: WorkerSettings) -> BlockingEventLog:
    global _blocking_log
    if _blocking_log is None:
        with _blocking_log_lock:
            if _blocking_log is None:
                # Shared by every pool thread's hooks; a blocking pool lets the 101st wait
                # instead of failing (redis-py's default pool stops at 100 connections).
                pool = redis.BlockingConnectionPool.from_url(
                    settings.redis_url_normalised,
                    max_connections=settings.worker_concurrency + 16,
                    timeout=20,
                    client_name=CLIENT_NAME,
                    socket_connect_timeout=5,
                )
                client = redis.Redis(connection_pool=pool)
                _blocking_log = BlockingEventLog(
                    client, maxlen=settings.event_log_maxlen, ttl=settings.task_data_ttl
                )
    return _blocking_log


#: Pauses before the publish is tried again: a terminal event left unpublished leaves the
#: task's stream open, so a short Redis hiccup is worth riding out.
PUBLISH_RETRY_DELAYS = (0.1, 0.5, 2.0)


def publish_from_hook(settings: WorkerSettings, task_id: str, events: list[NewEvent]) -> None:
    """Publish from a Celery hook; a Redis failure is retried, then logged, never raised (the
    result stands)."""
    for delay in (*PUBLISH_RETRY_DELAYS, None):
        try:
            _process_log(settings).append(task_id, events)
        except redis.RedisError as exc:
            if delay is not None:
                time.sleep(delay)
                continue
            log_event(
                logger,
                logging.ERROR,
                "stream_publish_failed",
                task_id=task_id,
                events=",".join(kind.value for kind, _ in events),
                error=repr(exc),
            )
        return


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The ``error`` event's payload, which polling shows as ``error``: type, message, and the
    error's details (a timeout's reason and partial content)."""
    details = exc.details if isinstance(exc, AgentError) else {}
    return {"type": type(exc).__name__, "message": str(exc), **details}


def publish_stored_outcome(
    settings: WorkerSettings, task_id: str, *, state: str, result: Any
) -> bool:
    """Publish the terminal event of an outcome Celery has stored, unless the log has one.

    For a delivery of a task that already ended whose worker died after storing the outcome and
    before its hook published it: the stream would otherwise wait forever. True if published.
    """
    log = _process_log(settings)
    if state == "SUCCESS":
        event: NewEvent = (EventType.RESULT, result)
    elif state == "REVOKED":
        event = (EventType.CANCELLED, {"reason": "cancelled", "content": log.content(task_id)})
    else:
        error = result if isinstance(result, BaseException) else RuntimeError(str(result))
        event = (EventType.ERROR, error_payload(error))
    try:
        return bool(log.append(task_id, [event], unless_ended=True))
    except redis.RedisError as exc:
        log_event(
            logger,
            logging.ERROR,
            "stream_publish_failed",
            task_id=task_id,
            events=event[0].value,
            error=repr(exc),
        )
        return False


def stored_state(settings: WorkerSettings, task_id: str) -> tuple[str, Any] | None:
    """The task's state and result as Celery's Redis result backend stores them, read with the
    hooks' shared client (one GET): None when the result backend is another server (the caller
    asks Celery then) or nothing is stored."""
    if settings.result_backend_url != settings.redis_url_normalised:
        return None
    raw = _process_log(settings).redis.get(keys.celery_task_meta(task_id))
    if not raw:
        return ("PENDING", None)
    meta = orjson.loads(raw)
    return (str(meta.get("status")), meta.get("result"))
