"""Whether a delivery may run: against a real Redis server."""

import pytest
from redis.asyncio import Redis

from streaming import keys
from streaming.event_log import EventLog
from streaming.events import EventType
from worker.recovery import DuplicateRunError, claim_run

pytestmark = pytest.mark.anyio


async def test_claim_run_counts_attempts(redis: Redis, task_id: str) -> None:
    assert await claim_run(redis, task_id, worker_name="w1") == 1
    assert await claim_run(redis, task_id, worker_name="w1") == 2


async def test_claim_run_refuses_a_task_whose_log_has_ended(redis: Redis, task_id: str) -> None:
    await EventLog(redis, maxlen=100, ttl=60).append(
        task_id, [(EventType.RESULT, {"content": "done"})]
    )

    with pytest.raises(DuplicateRunError, match="already ended"):
        await claim_run(redis, task_id, worker_name="w1")


async def test_claim_run_refuses_while_another_live_worker_runs_it(
    redis: Redis, task_id: str
) -> None:
    await claim_run(redis, task_id, worker_name="alive")
    await redis.set(keys.worker_alive("alive"), b"1", ex=60)

    with pytest.raises(DuplicateRunError, match="running on alive"):
        await claim_run(redis, task_id, worker_name="other")


async def test_claim_run_takes_over_from_a_dead_worker(redis: Redis, task_id: str) -> None:
    assert await claim_run(redis, task_id, worker_name="dead") == 1

    assert await claim_run(redis, task_id, worker_name="other") == 2
    assert await redis.get(keys.task_runner(task_id)) == b"other"
