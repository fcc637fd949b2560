"""Who owns a task: the record the web process writes before it queues anything.

Celery's result backend cannot tell an unknown id from a queued task (both read as PENDING) and
knows nothing of users, so every accepted task gets a small Redis hash (``contract.task_record``:
owner, agent, task name, creation time, and what was sent). No record means 404, for unknown ids
and foreign producers' tasks alike; a record owned by someone else is 404 too, so ids cannot be
probed. Records live as long as the task's event log (``RedisSettings.task_data_ttl``). Once the
broker took the task, ``mark_sent`` says so and enters it among the open tasks, where the workers
find a task whose message was lost.
"""

import re
import time
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from app.errors import NotFoundError, ServiceUnavailableError
from contract import keys
from contract.task_record import SENT, TaskRecord, decode_record, encode_record

_TASK_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class TaskRecordStore:
    def __init__(self, redis: "Redis", *, ttl: int) -> None:
        self._redis = redis
        self._ttl = ttl

    async def create(self, record: TaskRecord) -> None:
        key = keys.task_record(record.task_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=encode_record(record))  # type: ignore[arg-type]
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def mark_sent(self, task_id: str) -> None:
        """The broker took the task: it is open until a worker ends it."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.task_record(task_id), SENT, "1")
            pipe.zadd(keys.OPEN_TASKS, {task_id: time.time()})
            await pipe.execute()

    async def get(self, task_id: str) -> TaskRecord | None:
        raw = await self._redis.hgetall(keys.task_record(task_id))
        if not raw:
            return None
        return decode_record(task_id, raw)

    async def get_owned(self, task_id: str, *, owner: str) -> TaskRecord | None:
        """The record if ``owner`` owns the task; None for unknown and foreign tasks alike."""
        record = await self.get(task_id)
        return record if record is not None and record.owner == owner else None

    async def delete(self, task_id: str) -> None:
        await self._redis.delete(keys.task_record(task_id))


def new_record(
    *,
    task_id: str,
    owner: str,
    agent_id: str,
    task_name: str,
    queue: str,
    kwargs: Mapping[str, Any],
) -> TaskRecord:
    return TaskRecord(
        task_id=task_id,
        owner=owner,
        agent_id=agent_id,
        task_name=task_name,
        created_at=time.time(),
        queue=queue,
        kwargs=kwargs,
    )


async def find_owned_task(store: TaskRecordStore, task_id: str, *, owner: str) -> TaskRecord:
    """The record of a task ``owner`` may see; 404 for malformed, unknown and foreign ids alike."""
    if not _TASK_ID.match(task_id):
        raise NotFoundError("task not found")
    try:
        record = await store.get_owned(task_id, owner=owner)
    except Exception as exc:
        raise ServiceUnavailableError("task store unavailable") from exc
    if record is None:
        raise NotFoundError("task not found")
    return record
