"""Sending a task again from what the web recorded (``contract.task_record``), for the recovery.

Two cases: a message lost between kombu's two round trips (``redelivery.resend_lost``), and a
task whose web process recorded it and never sent it (the broker elsewhere; ``take_unsent``).
For the second, the web may be slow rather than dead: whoever marks the record ``sent`` first
sends it (the web after its send, the recovery before its own), and a web whose send then fails
finds the record taken and answers 202 instead of undoing it (``app.acceptance``). A task sent
twice costs nothing: the second delivery finds the run claimed, or the log ended.

The message is the one the web sends: the repr without the user's message, the ``sent_at``
header; and a short publish retry, since this runs in the lease's renewal thread, which must not
stall past the lease while a broker is in trouble.
"""

import time
from typing import Any

import redis
from celery import Celery

from contract import keys
from contract.task_record import SENT, TaskRecord
from contract.task_repr import agent_kwargs_repr
from contract.tasks import SENT_AT_HEADER

#: Publishing from the renewal thread: a few quick tries, not the workers' patient policy.
RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}

# KEYS: record, open tasks. ARGV: now, task id. 1 if this caller now owns sending the task.
_TAKE = f"""
if redis.call('HEXISTS', KEYS[1], 'owner') == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], '{SENT}') == 1 then return 0 end
redis.call('HSET', KEYS[1], '{SENT}', '1')
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


def send(app: "Celery[Any]", record: TaskRecord) -> None:
    """Send ``record``'s task under its own id (raises what the broker raises)."""
    assert record.kwargs is not None
    app.send_task(
        record.task_name,
        kwargs=dict(record.kwargs),
        task_id=record.task_id,
        queue=record.queue or None,
        priority=record.priority,
        argsrepr="()",
        kwargsrepr=agent_kwargs_repr(record.kwargs),
        headers={SENT_AT_HEADER: time.time()},
        retry_policy=RETRY_POLICY,
    )


def take_unsent(client: "redis.Redis", record: TaskRecord) -> bool:
    """Mark a never-sent task sent, and open, if nobody has: True if it is ours to send."""
    taken = client.eval(
        _TAKE, 2, keys.task_record(record.task_id), keys.OPEN_TASKS, time.time(), record.task_id
    )
    return bool(taken)


def give_back(client: "redis.Redis", record: TaskRecord) -> None:
    """Our send failed: the next pass (or the web) may try again."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hdel(keys.task_record(record.task_id), SENT)
        pipe.zrem(keys.OPEN_TASKS, record.task_id)
        pipe.execute()
