"""Accepting a task: its user's slot, its owner record, its first event and its message, in one
round trip when the broker is the web's own Redis.

One script (``ACCEPT``) takes the user's active-task slot (and urgent one) if the caps allow
(``app.caps``), writes the task's record (``contract.task_record``), opens its event log with
``status: queued``, and, when the broker is this very Redis database, pushes the task's message
to its queue list (``app.celery_message``), marks the record sent and enters the task among the
open ones. Either all of it happens or, when a cap refuses, none. With the broker elsewhere (a
Redis of its own, RabbitMQ) the message is sent after the script, and the record marked sent
after that; a message that could not be sent gives the slot back and removes the record, unless
the workers, finding the record unsent past their grace, have marked it and sent the task
themselves (``worker.recovery.resend``): then it is queued.

This script writes keys of three hash slots (the user's, the task's, the global index) and the
broker's list: it needs a standalone Redis (or one that is a primary with replicas), as kombu's
Redis transport does anyway.
"""

import time
from dataclasses import dataclass
from typing import Any

from celery import Celery
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from app.caps import ACTIVE_RETRY_AFTER, URGENT_PRIORITY, CapLimits, CapReachedError
from app.celery_message import redis_message
from app.submission import SubmissionError, TaskSubmitter
from contract import keys
from contract.events import EventType
from contract.task_record import SENT, TaskRecord, encode_record
from streaming import lean_pipeline
from streaming.event_log import APPEND_FUNCTION, event_args, log_keys

# KEYS: user's active, user's urgent, users index, record, events, content, attempt, open tasks,
# queue list ('' when the broker is elsewhere).
# ARGV: task id, now, active cap, urgent cap, urgent ('1'), user id, ttl, channel, maxlen,
# message ('' when the broker is elsewhere), then the queued event (4 values), then the
# record's fields (name, value)*.
_ACCEPT = (
    APPEND_FUNCTION
    + """
local task_id, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[7])
-- Sent again after its reply was lost (the id is new on every request): it was done already.
if redis.call('EXISTS', KEYS[4]) == 1 then return 'ok' end
if ARGV[5] == '1' then
  local cap = tonumber(ARGV[4])
  if cap > 0 and redis.call('ZCARD', KEYS[2]) >= cap then return 'urgent_tasks' end
end
local cap = tonumber(ARGV[3])
if cap > 0 and redis.call('ZCARD', KEYS[1]) >= cap then return 'active_tasks' end
redis.call('ZADD', KEYS[1], now, task_id)
if ARGV[5] == '1' then redis.call('ZADD', KEYS[2], now, task_id) end
redis.call('SADD', KEYS[3], ARGV[6])
local fields = {}
for i = 15, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[4], unpack(fields))
redis.call('EXPIRE', KEYS[4], ttl)
append_events(KEYS[5], KEYS[6], KEYS[7], ARGV[8], ARGV[9], ttl,
  {ARGV[11], ARGV[12], ARGV[13], ARGV[14]}, 1)
if ARGV[10] ~= '' then
  redis.call('LPUSH', KEYS[9], ARGV[10])
  redis.call('HSET', KEYS[4], 'sent', '1')
  redis.call('ZADD', KEYS[8], now, task_id)
end
return 'ok'
"""
)

# KEYS: record, user's active, user's urgent. ARGV: task id. 0 when the record is marked sent.
_UNDO = f"""
if redis.call('HEXISTS', KEYS[1], '{SENT}') == 1 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

_ACCEPT_SHA = lean_pipeline.script_sha(_ACCEPT)
#: The event a task's log starts with.
_QUEUED = [(EventType.STATUS, {"status": "queued"})]


@dataclass(frozen=True, slots=True)
class Acceptance:
    """How this web process accepts tasks."""

    redis: "Redis"
    limits: CapLimits
    ttl: int
    maxlen: int
    producer: "Celery[Any]"
    #: The broker is this Redis database: the message goes in the script.
    broker_is_here: bool
    #: The broker's Redis when it is another one (None: here, or not Redis).
    broker_redis: "Redis | None"
    #: kombu, for a broker that is not Redis.
    submitter: TaskSubmitter

    async def accept(
        self,
        record: TaskRecord,
        *,
        priority: int,
        argsrepr: str | None = None,
        kwargsrepr: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Accept ``record``'s task, or raise ``CapReachedError`` having changed nothing;
        ``SubmissionError`` when the broker did not take it (nothing is left either)."""
        assert record.kwargs is not None
        user_id, task_id = record.owner, record.task_id
        urgent = priority >= URGENT_PRIORITY
        queue_list, message = redis_message(
            self.producer,
            record.task_name,
            task_id=task_id,
            kwargs=record.kwargs,
            queue=record.queue,
            priority=priority,
            argsrepr=argsrepr,
            kwargsrepr=kwargsrepr,
            headers=headers,
        )
        script_keys = [
            keys.user_active_tasks(user_id),
            keys.user_urgent_tasks(user_id),
            keys.USERS_WITH_ACTIVE_TASKS,
            keys.task_record(task_id),
            *log_keys(task_id),
            keys.OPEN_TASKS,
            queue_list if self.broker_is_here else "",
        ]
        args: list[bytes | str | int | float] = [
            task_id,
            time.time(),
            self.limits.active_tasks,
            self.limits.urgent_tasks,
            "1" if urgent else "",
            user_id,
            self.ttl,
            keys.task_channel(task_id),
            self.maxlen,
            message if self.broker_is_here else "",
        ]
        args += event_args(_QUEUED)
        for name, value in encode_record(record).items():
            args += [name, value]
        verdict = await self._accept_script(script_keys, args)
        if verdict != "ok":
            raise _refusal(verdict, self.limits)
        if not self.broker_is_here:
            await self._send_elsewhere(record, queue_list, message, priority=priority)

    async def _accept_script(
        self, script_keys: list[str], args: list[bytes | str | int | float]
    ) -> str:
        command = ("EVALSHA", _ACCEPT_SHA, len(script_keys), *script_keys, *args)
        (reply,) = await lean_pipeline.execute(self.redis, [command])
        if isinstance(reply, NoScriptError):
            await self.redis.script_load(_ACCEPT)
            (reply,) = await lean_pipeline.execute(self.redis, [command])
        if isinstance(reply, Exception):
            raise reply
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    async def _send_elsewhere(
        self, record: TaskRecord, queue_list: str, message: str, *, priority: int
    ) -> None:
        try:
            if self.broker_redis is not None:
                await self.broker_redis.lpush(queue_list, message)
            else:
                assert record.kwargs is not None
                await self.submitter.submit(
                    record.task_name,
                    task_id=record.task_id,
                    kwargs=record.kwargs,  # type: ignore[arg-type]
                    priority=priority,
                )
        except Exception as exc:
            if not await self._undo(record):
                return  # the workers found it unsent and sent it meanwhile: it is queued
            if isinstance(exc, SubmissionError):
                raise
            raise SubmissionError(f"the task queue is unavailable: {type(exc).__name__}") from exc
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.task_record(record.task_id), SENT, "1")
            pipe.zadd(keys.OPEN_TASKS, {record.task_id: time.time()})
            await pipe.execute()

    async def _undo(self, record: TaskRecord) -> bool:
        """Remove the task and give its slot back, unless the workers' recovery has taken it
        to send (``worker.recovery.resend``: a send slower than its grace); False then."""
        task_keys = [
            keys.task_record(record.task_id),
            keys.user_active_tasks(record.owner),
            keys.user_urgent_tasks(record.owner),
        ]
        undone = await self.redis.eval(_UNDO, len(task_keys), *task_keys, record.task_id)
        return bool(undone)


def _refusal(cap: str, limits: CapLimits) -> CapReachedError:
    if cap == "urgent_tasks":
        return CapReachedError(
            f"you have {limits.urgent_tasks} urgent tasks (priority {URGENT_PRIORITY} or more) "
            "not yet ended, the most one user may have (MAX_URGENT_TASKS_PER_USER); send this "
            "one with a lower priority, or later",
            cap=cap,
            limit=limits.urgent_tasks,
            retry_after=ACTIVE_RETRY_AFTER,
        )
    return CapReachedError(
        f"you have {limits.active_tasks} tasks queued or running, the most one user may have "
        "(MAX_ACTIVE_TASKS_PER_USER); try again when one has ended",
        cap="active_tasks",
        limit=limits.active_tasks,
        retry_after=ACTIVE_RETRY_AFTER,
    )
