"""Accepting a task against a real Redis server: the one script that takes the user's slot,
writes the record, opens the log and queues the message."""

import uuid
from collections.abc import Callable

import pytest
import redis as redis_lib
from celery import Celery
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.acceptance import Acceptance
from app.caps import CapLimits
from app.submission import SubmissionError, TaskSubmitter
from app.task_records import new_record
from contract import keys
from contract.task_record import TaskRecord
from contract.tasks import INVOKE_AGENT_ASYNC, redis_queue_list
from scripts.embedded_redis import EmbeddedRedis
from streaming.event_log import EventLogReader
from tests.support import redis_databases
from tests.support.lost_reply import lose_first_reply
from teststack.stack import redis_db_url
from worker.recovery import resend

pytestmark = pytest.mark.anyio

QUEUE = "agent-tasks"


def _record(task_id: str, owner: str) -> TaskRecord:
    return new_record(
        task_id=task_id,
        owner=owner,
        agent_id="echo",
        task_name=INVOKE_AGENT_ASYNC,
        queue=QUEUE,
        kwargs={"agent_id": "echo", "message": "hi"},
        priority=5,
    )


def _acceptance(redis: Redis, *, active_tasks: int, broker_redis: object = None) -> Acceptance:
    """An acceptance on ``redis``; with ``broker_redis``, the broker is that other Redis."""
    producer = Celery("acceptance-test", broker="redis://", set_as_current=False)
    return Acceptance(
        redis=redis,
        limits=CapLimits(
            active_tasks=active_tasks, urgent_tasks=1, streams=1, token_mints_per_minute=1
        ),
        ttl=60,
        maxlen=100,
        producer=producer,
        broker_is_here=broker_redis is None,
        broker_redis=broker_redis,  # type: ignore[arg-type]
        submitter=TaskSubmitter(producer),
    )


async def test_an_acceptance_sent_again_after_its_reply_was_lost_applies_once(
    redis: Redis, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection died after Redis ran the script and before its reply came back, so the
    pipeline sends it once more: the second run must neither refuse the task as over the cap
    (one slot, taken by this very task) nor queue it twice."""
    lost = lose_first_reply(monkeypatch)
    acceptance = _acceptance(redis, active_tasks=1)
    owner = f"user-{uuid.uuid4().hex}"
    record = _record(task_id, owner)

    try:
        await acceptance.accept(record, priority=5)

        assert lost, "the reply was lost once"
        assert await redis.zcard(keys.user_active_tasks(owner)) == 1
        queued = await redis.lrange(redis_queue_list(QUEUE, 5), 0, -1)
        assert sum(task_id.encode() in message for message in queued) == 1
        assert len(await EventLogReader(redis).read_after(task_id, None)) == 1
    finally:
        await redis.delete(redis_queue_list(QUEUE, 5), keys.user_active_tasks(owner))


class _StalledBroker:
    """A broker's Redis whose push fails, after ``meanwhile`` ran (what happened while the web
    waited on it)."""

    def __init__(self, meanwhile: Callable[[], object]) -> None:
        self._meanwhile = meanwhile

    async def lpush(self, *_: object) -> int:
        self._meanwhile()
        raise RedisConnectionError("the broker stalled")


def _acceptance_elsewhere(redis: Redis, broker: object) -> Acceptance:
    return _acceptance(redis, active_tasks=5, broker_redis=broker)


@pytest.mark.parametrize("taken_meanwhile", [True, False])
async def test_a_failed_send_undoes_the_task_unless_the_workers_took_it_meanwhile(
    redis: Redis, redis_server: EmbeddedRedis, task_id: str, taken_meanwhile: bool
) -> None:
    """A send slower than the workers' grace: the recovery marked the record sent and sent the
    task itself. The web's own send then failing must not remove a task that is queued."""
    owner = f"user-{uuid.uuid4().hex}"
    record = _record(task_id, owner)
    sync = redis_lib.Redis.from_url(redis_db_url(redis_server.url, redis_databases.UNIT))

    def recovery_takes_it() -> None:
        if taken_meanwhile:
            assert resend.take_unsent(sync, record)

    acceptance = _acceptance_elsewhere(redis, _StalledBroker(recovery_takes_it))
    try:
        if taken_meanwhile:
            await acceptance.accept(record, priority=5)  # queued: the client gets its 202
            assert await redis.hget(keys.task_record(task_id), "sent") == b"1"
            assert await redis.zcard(keys.user_active_tasks(owner)) == 1
        else:
            with pytest.raises(SubmissionError):
                await acceptance.accept(record, priority=5)
            assert not await redis.exists(keys.task_record(task_id))
            assert await redis.zcard(keys.user_active_tasks(owner)) == 0
    finally:
        sync.close()
        await redis.delete(keys.user_active_tasks(owner), keys.task_record(task_id))
        await redis.zrem(keys.OPEN_TASKS, task_id)
