"""Whether a delivery may run: against a real Redis server."""

import asyncio

import pytest
from redis.asyncio import Redis

from streaming import keys
from streaming.event_log import EventLog
from streaming.events import EventType
from worker.recovery import DuplicateRunError, claim_run, release_run

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


async def test_a_released_task_runs_on_another_live_worker(redis: Redis, task_id: str) -> None:
    """A retry delivered to another worker while the first one is alive must run."""
    await redis.set(keys.worker_alive("first"), b"1", ex=60)
    assert await claim_run(redis, task_id, worker_name="first") == 1

    await release_run(redis, task_id, worker_name="first")

    assert await claim_run(redis, task_id, worker_name="second") == 2


async def test_release_by_a_worker_that_no_longer_runs_it_changes_nothing(
    redis: Redis, task_id: str
) -> None:
    await claim_run(redis, task_id, worker_name="now")

    await release_run(redis, task_id, worker_name="before")

    assert await redis.get(keys.task_runner(task_id)) == b"now"


async def test_two_deliveries_racing_for_a_dead_workers_task_run_it_once(
    redis: Redis, task_id: str
) -> None:
    await claim_run(redis, task_id, worker_name="dead")
    for name in ("a", "b"):
        await redis.set(keys.worker_alive(name), b"1", ex=60)

    outcomes = await asyncio.gather(
        claim_run(redis, task_id, worker_name="a"),
        claim_run(redis, task_id, worker_name="b"),
        return_exceptions=True,
    )

    assert sorted(type(o).__name__ for o in outcomes) == ["DuplicateRunError", "int"]
    assert 2 in outcomes
