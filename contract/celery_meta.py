"""Celery's result-backend record of a task, read and written without Celery.

Celery's Redis backend stores a task's state as JSON under ``celery-task-meta-<id>``
(``contract.keys.celery_task_meta``) and publishes the same bytes on a channel of that name, which
``AsyncResult.get()`` listens to. The worker writes its tasks' states here itself, in the round
trip that carries the matching stream event (one round trip instead of Celery's three), and the
web reads them for polling with one GET; both follow exactly the layout of
``celery.backends.base.Backend._get_result_meta`` and ``prepare_exception``, so a Celery client
(``AsyncResult``, Flower) cannot tell the difference.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
PROGRESS = "PROGRESS"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
#: The states after which nothing changes (``celery.states.READY_STATES``).
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})


@dataclass(frozen=True, slots=True)
class TaskMeta:
    """A decoded record: Celery's state, and its ``result`` (the return value, the progress
    metadata, or an error as ``{"exc_type", "exc_message", "exc_module"}``)."""

    status: str
    result: Any = None

    @property
    def ready(self) -> bool:
        return self.status in READY_STATES


def encode_meta(task_id: str, status: str, result: Any) -> bytes:
    """The record Celery's backend would store for ``status`` with ``result``."""
    done = datetime.now(UTC).isoformat() if status in READY_STATES else None
    record = {
        "status": status,
        "result": result,
        "traceback": None,
        "children": [],
        "date_done": done,
        "task_id": task_id,
    }
    return orjson.dumps(record)


def decode_meta(raw: bytes | str | None) -> TaskMeta | None:
    """The record as stored; None when nothing is (an unknown or a queued task)."""
    if not raw:
        return None
    value = orjson.loads(raw)
    if not isinstance(value, Mapping):
        return None
    return TaskMeta(status=str(value.get("status") or PENDING), result=value.get("result"))


def exception_result(exc_type: str, message: str, *, module: str | None) -> dict[str, Any]:
    """An error as Celery serialises one (``Backend.prepare_exception`` with JSON)."""
    return {"exc_type": exc_type, "exc_message": [message], "exc_module": module}


def exception_parts(result: Any) -> tuple[str, str]:
    """(type, message) of an error stored by Celery or by ``exception_result``."""
    if not isinstance(result, Mapping):
        return "Error", str(result)
    message = result.get("exc_message", "")
    if isinstance(message, list | tuple):
        message = " ".join(str(part) for part in message)
    return str(result.get("exc_type") or "Error"), str(message)
