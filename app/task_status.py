"""A task's state as clients see it, from Celery's result backend and the task's event log.

Celery's states are mapped onto the six statuses of the API (queued, running, retrying, completed,
failed, cancelled). The backend entry is read with one async GET of the key Celery writes, rather
than through ``AsyncResult`` whose calls block; the decoding follows Celery's JSON layout
(``{"status", "result", ...}``, an error stored as ``{"exc_type", "exc_message"}``). Once the
task's log holds its terminal event, that event decides the outcome: the stream and polling then
show the very same payload (a timeout's partial content included, which Celery does not keep).
"""

from collections.abc import Mapping
from typing import Any

import orjson
from redis.asyncio import Redis

from app.schemas import TaskError, TaskStatus, TaskStatusName
from contract import keys
from contract.events import EventType
from streaming.event_log import EventLogReader
from streaming.events import Event

_STATUS_BY_STATE: dict[str, TaskStatusName] = {
    "PENDING": "queued",
    "RECEIVED": "queued",
    "STARTED": "running",
    "PROGRESS": "running",
    "RETRY": "retrying",
    "SUCCESS": "completed",
    "FAILURE": "failed",
    "REVOKED": "cancelled",
}

_STATE_BY_TERMINAL_EVENT = {
    EventType.RESULT: "SUCCESS",
    EventType.ERROR: "FAILURE",
    EventType.CANCELLED: "REVOKED",
}


def _error_from(value: Any) -> TaskError:
    if not isinstance(value, Mapping):
        return TaskError(type="Error", message=str(value))
    message = value.get("exc_message", "")
    if isinstance(message, list | tuple):
        message = " ".join(str(part) for part in message)
    return TaskError(type=str(value.get("exc_type") or "Error"), message=str(message))


def status_from_meta(task_id: str, meta: Mapping[str, Any] | None) -> TaskStatus:
    """The API's view of a task whose backend entry is ``meta`` (None: nothing stored yet)."""
    if meta is None:
        return TaskStatus(task_id=task_id, state="PENDING", status="queued", progress=0)
    state = str(meta.get("status", "PENDING"))
    status = _STATUS_BY_STATE.get(state, "running")
    value = meta.get("result")
    if status == "completed":
        result = value if isinstance(value, dict) else {"content": value}
        return TaskStatus(
            task_id=task_id,
            state=state,
            status=status,
            progress=100,
            stage="completed",
            result=result,
        )
    if status in ("failed", "retrying"):
        return TaskStatus(
            task_id=task_id,
            state=state,
            status=status,
            progress=0,
            stage=status,
            error=_error_from(value),
        )
    if status == "cancelled":
        return TaskStatus(
            task_id=task_id, state=state, status=status, progress=0, stage="cancelled"
        )
    progress, stage = 0, str(status)
    if isinstance(value, Mapping):
        raw = value.get("progress")
        progress = min(100, max(0, raw)) if isinstance(raw, int) else 0
        stage = str(value.get("stage") or stage)
    return TaskStatus(task_id=task_id, state=state, status=status, progress=progress, stage=stage)


def status_from_terminal_event(task_id: str, event: Event) -> TaskStatus:
    """The API's view of a task whose log ends with the terminal ``event``."""
    payload = event.payload()
    state = _STATE_BY_TERMINAL_EVENT[event.type]
    status = _STATUS_BY_STATE[state]
    if event.type is EventType.RESULT:
        return TaskStatus(
            task_id=task_id,
            state=state,
            status=status,
            progress=100,
            stage="completed",
            result=payload,
        )
    if event.type is EventType.ERROR:
        return TaskStatus(
            task_id=task_id,
            state=state,
            status=status,
            progress=0,
            stage="failed",
            error=TaskError.model_validate(payload),
        )
    return TaskStatus(task_id=task_id, state=state, status=status, progress=0, stage="cancelled")


async def read_task_status(backend: "Redis", events: "Redis", task_id: str) -> TaskStatus:
    last = await EventLogReader(events).last(task_id)
    if last is not None and last.terminal:
        return status_from_terminal_event(task_id, last)
    raw = await backend.get(keys.celery_task_meta(task_id))
    return status_from_meta(task_id, orjson.loads(raw) if raw is not None else None)
