"""Whether a delivery may run, and how its run ends: the claim and the outcome, against a real
Redis server."""

import asyncio

import orjson
import pytest
from redis.asyncio import Redis

from contract import celery_meta, keys
from contract.events import EventType
from scripts.embedded_redis import EmbeddedRedis
from streaming.event_log import EventLog, EventLogReader
from tests.support import redis_databases
from tests.support.lost_reply import lose_first_reply
from teststack.stack import redis_db_url
from worker.errors import LLMUnavailableError
from worker.recovery.claim import CancelRequested, Claimed, Ended, Held, RunClaims
from worker.tasks.outcome import Cancelled, Completed, Failed, OutcomeWriter, Retrying

pytestmark = pytest.mark.anyio


def _claims(redis: Redis, *, lease_ms: int = 60_000) -> RunClaims:
    return RunClaims(
        redis, maxlen=100, ttl=60, lease_ms=lease_ms, state_expires=60, state_in_script=True
    )


def _outcomes(redis: Redis) -> OutcomeWriter:
    return OutcomeWriter(
        redis, backend=redis, maxlen=100, ttl=60, state_expires=60, outage_limit=1.0
    )


async def _types(redis: Redis, task_id: str) -> list[EventType]:
    return [e.type for e in await EventLogReader(redis).read_after(task_id, None)]


async def test_a_claim_counts_attempts_and_starts_the_stream(redis: Redis, task_id: str) -> None:
    claims, outcomes = _claims(redis), _outcomes(redis)

    assert await claims.claim(task_id, run="r1") == Claimed(attempt=1)
    assert await _types(redis, task_id) == [EventType.STATUS, EventType.PROGRESS]
    state = celery_meta.decode_meta(await redis.get(keys.celery_task_meta(task_id)))
    assert state == celery_meta.TaskMeta("PROGRESS", {"progress": 5, "stage": "starting"})

    error = LLMUnavailableError("busy")
    await outcomes.write(task_id, Retrying(error, countdown=1), run="r1")
    assert await claims.claim(task_id, run="r2") == Claimed(attempt=2)
    events = await EventLogReader(redis).read_after(task_id, None)
    assert [e.type for e in events][-3:] == [EventType.RESET, EventType.STATUS, EventType.PROGRESS]
    assert events[-3].payload() == {"attempt": 2, "content": ""}
    assert events[-2].payload() == {"status": "running", "attempt": 2}


async def test_a_claim_refuses_a_task_whose_log_has_ended(redis: Redis, task_id: str) -> None:
    await EventLog(redis, maxlen=100, ttl=60).append(
        task_id, [(EventType.RESULT, {"content": "done"})]
    )

    assert await _claims(redis).claim(task_id, run="late") == Ended(kind="result")
    assert await redis.get(keys.task_runner(task_id)) is None


async def test_a_claim_waits_while_another_run_holds_the_task(redis: Redis, task_id: str) -> None:
    claims = _claims(redis)
    await claims.claim(task_id, run="first")

    assert await claims.claim(task_id, run="second") == Held(runner="first")


async def test_a_claim_sent_again_after_its_reply_was_lost_is_its_own_not_held(
    redis: Redis, task_id: str
) -> None:
    """The hot path sends a script again when its connection died before the reply: Redis may
    have run it already. The run that holds the task is this one: it goes on, once."""
    claims = _claims(redis)
    assert await claims.claim(task_id, run="r1") == Claimed(attempt=1)

    assert await claims.claim(task_id, run="r1") == Claimed(attempt=1)
    assert await _types(redis, task_id) == [EventType.STATUS, EventType.PROGRESS]


async def test_a_run_whose_lease_lapsed_is_taken_over(redis: Redis, task_id: str) -> None:
    await _claims(redis, lease_ms=50).claim(task_id, run="dead")
    await asyncio.sleep(0.2)  # the dead worker's lease was not renewed

    assert await _claims(redis).claim(task_id, run="next") == Claimed(attempt=2)
    assert await redis.get(keys.task_runner(task_id)) == b"next"


async def test_a_cancel_requested_before_the_start_is_seen_by_the_claim(
    redis: Redis, task_id: str
) -> None:
    await redis.set(keys.task_cancel(task_id), b"1")

    assert await _claims(redis).claim(task_id, run="r") == CancelRequested()
    assert await _types(redis, task_id) == []


async def test_two_deliveries_racing_run_the_task_once(redis: Redis, task_id: str) -> None:
    claims = _claims(redis)

    outcomes = await asyncio.gather(claims.claim(task_id, run="a"), claims.claim(task_id, run="b"))

    assert sorted(type(o).__name__ for o in outcomes) == ["Claimed", "Held"]


async def test_an_outcome_stores_state_event_and_releases_the_claim(
    redis: Redis, task_id: str
) -> None:
    await _claims(redis).claim(task_id, run="r")
    result = {"content": "hi", "metadata": {}, "usage": {}}

    assert await _outcomes(redis).write(task_id, Completed(result), run="r")

    assert (await _types(redis, task_id))[-1] is EventType.RESULT
    state = celery_meta.decode_meta(await redis.get(keys.celery_task_meta(task_id)))
    assert state == celery_meta.TaskMeta("SUCCESS", result)
    assert await redis.get(keys.task_runner(task_id)) is None


async def test_an_outcome_sent_again_after_its_reply_was_lost_still_stores_celerys_state(
    redis: Redis, redis_server: EmbeddedRedis, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Celery's backend in another database, the state follows the outcome's script: a
    lost reply made the pipeline send the script again, which found the log ended (by itself)."""
    backend = Redis.from_url(redis_db_url(redis_server.url, redis_databases.OTHER_BACKEND))
    outcomes = OutcomeWriter(
        redis, backend=backend, maxlen=100, ttl=60, state_expires=60, outage_limit=1.0
    )
    result = {"content": "hi", "metadata": {}, "usage": {}}
    lost = lose_first_reply(monkeypatch)
    try:
        await outcomes.write(task_id, Completed(result), run="r")

        assert lost, "the reply was lost once"
        assert (await _types(redis, task_id))[-1] is EventType.RESULT
        state = celery_meta.decode_meta(await backend.get(keys.celery_task_meta(task_id)))
        assert state == celery_meta.TaskMeta("SUCCESS", result)
    finally:
        await backend.delete(keys.celery_task_meta(task_id))
        await backend.aclose()


async def test_a_second_outcome_changes_nothing(redis: Redis, task_id: str) -> None:
    outcomes = _outcomes(redis)
    await outcomes.write(task_id, Cancelled(content="par"), run="a")

    assert not await outcomes.write(task_id, Failed(RuntimeError("late")), run="b")

    assert await _types(redis, task_id) == [EventType.CANCELLED]
    state = celery_meta.decode_meta(await redis.get(keys.celery_task_meta(task_id)))
    assert state is not None
    assert state.status == "REVOKED"


async def test_a_failure_is_stored_as_celery_stores_an_exception(
    redis: Redis, task_id: str
) -> None:
    await _outcomes(redis).write(task_id, Failed(LLMUnavailableError("busy")), run="r")

    stored = await redis.get(keys.celery_task_meta(task_id))
    assert stored is not None
    raw = orjson.loads(stored)
    assert raw["status"] == "FAILURE"
    assert raw["result"] == {
        "exc_type": "LLMUnavailableError",
        "exc_message": ["busy"],
        "exc_module": "worker.errors",
    }
    assert raw["date_done"] is not None


async def test_restore_state_makes_celery_agree_with_an_ended_log(
    redis: Redis, task_id: str
) -> None:
    await EventLog(redis, maxlen=100, ttl=60).append(
        task_id, [(EventType.RESULT, {"content": "done"})]
    )

    assert await _outcomes(redis).restore_state(task_id, "result")

    state = celery_meta.decode_meta(await redis.get(keys.celery_task_meta(task_id)))
    assert state == celery_meta.TaskMeta("SUCCESS", {"content": "done"})
    assert not await _outcomes(redis).restore_state(task_id, "result")
