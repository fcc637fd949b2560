"""Accepting a task against a real Redis server: the one script that takes the user's slot,
writes the record, opens the log and queues the message."""

import uuid

import pytest
from celery import Celery
from redis.asyncio import Redis

from app.acceptance import Acceptance
from app.caps import CapLimits
from app.submission import TaskSubmitter
from app.task_records import new_record
from contract import keys
from contract.tasks import INVOKE_AGENT_ASYNC, redis_queue_list
from streaming import lean_pipeline
from streaming.event_log import EventLogReader

pytestmark = pytest.mark.anyio

QUEUE = "agent-tasks"


async def test_an_acceptance_sent_again_after_its_reply_was_lost_applies_once(
    redis: Redis, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection died after Redis ran the script and before its reply came back, so the
    pipeline sends it once more: the second run must neither refuse the task as over the cap
    (one slot, taken by this very task) nor queue it twice."""
    real = lean_pipeline._execute_once
    lost: list[bool] = []

    async def reply_lost_once(*args: object, **kwargs: object) -> list[object]:
        replies = await real(*args, **kwargs)  # type: ignore[arg-type]
        if not lost and not isinstance(replies[0], Exception):  # applied (not NOSCRIPT)
            lost.append(True)
            raise lean_pipeline._NoReplyError
        return replies

    monkeypatch.setattr(lean_pipeline, "_execute_once", reply_lost_once)
    producer = Celery("acceptance-test", broker="redis://", set_as_current=False)
    acceptance = Acceptance(
        redis=redis,
        limits=CapLimits(active_tasks=1, urgent_tasks=1, streams=1, token_mints_per_minute=1),
        ttl=60,
        maxlen=100,
        producer=producer,
        broker_is_here=True,
        broker_redis=None,
        submitter=TaskSubmitter(producer),
    )
    owner = f"user-{uuid.uuid4().hex}"
    record = new_record(
        task_id=task_id,
        owner=owner,
        agent_id="echo",
        task_name=INVOKE_AGENT_ASYNC,
        queue=QUEUE,
        kwargs={"agent_id": "echo", "message": "hi"},
        priority=5,
    )

    try:
        await acceptance.accept(record, priority=5)

        assert lost, "the reply was lost once"
        assert await redis.zcard(keys.user_active_tasks(owner)) == 1
        queued = await redis.lrange(redis_queue_list(QUEUE, 5), 0, -1)
        assert sum(task_id.encode() in message for message in queued) == 1
        assert len(await EventLogReader(redis).read_after(task_id, None)) == 1
    finally:
        await redis.delete(redis_queue_list(QUEUE, 5), keys.user_active_tasks(owner))
