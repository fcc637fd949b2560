"""The record the web process writes for every task it accepts, before it queues the task.

Who owns the task, which agent and task name, when it was accepted, and what was sent: the
task's kwargs and queue, kept until the task ends so that a task whose message was lost (a worker
killed between taking it from the queue and recording it as delivered) can be sent again
(``worker.recovery.redelivery``); ``sent`` is set once the broker took the message, or by the
workers' recovery as it sends a task whose web process did not within a grace
(``worker.recovery.resend``): whoever sets it sends the task, and a web whose send failed
afterwards leaves a task so marked queued. The layout is the contract between the web
(which writes it) and the workers (which read it and drop the kwargs when the task ends).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

SENT = "sent"
KWARGS = "kwargs"


@dataclass(frozen=True, slots=True)
class TaskRecord:
    task_id: str
    owner: str
    agent_id: str
    task_name: str
    created_at: float
    queue: str = ""
    kwargs: Mapping[str, Any] | None = field(default=None, compare=False)
    sent: bool = False
    #: 0-9, 9 the most urgent.
    priority: int | None = None


def encode_record(record: TaskRecord) -> dict[str, str | bytes]:
    fields: dict[str, str | bytes] = {
        "owner": record.owner,
        "agent_id": record.agent_id,
        "task_name": record.task_name,
        "created_at": repr(record.created_at),
        "queue": record.queue,
    }
    if record.kwargs is not None:
        fields[KWARGS] = orjson.dumps(dict(record.kwargs))
    if record.sent:
        fields[SENT] = "1"
    if record.priority is not None:
        fields["priority"] = str(record.priority)
    return fields


def decode_record(task_id: str, raw: Mapping[bytes | str, bytes | str]) -> TaskRecord | None:
    """The record from its hash fields; None when there is none (or it is not a whole one)."""
    fields = {_text(key): value for key, value in raw.items()}
    try:
        kwargs = orjson.loads(fields[KWARGS]) if KWARGS in fields else None
        return TaskRecord(
            task_id=task_id,
            owner=_text(fields["owner"]),
            agent_id=_text(fields["agent_id"]),
            task_name=_text(fields["task_name"]),
            created_at=float(_text(fields["created_at"])),
            queue=_text(fields.get("queue", "")),
            kwargs=kwargs if isinstance(kwargs, dict) else None,
            sent=_text(fields.get(SENT, "")) == "1",
            priority=int(_text(fields["priority"])) if "priority" in fields else None,
        )
    except (KeyError, ValueError, orjson.JSONDecodeError):
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
