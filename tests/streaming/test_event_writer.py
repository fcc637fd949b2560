"""The worker's side of a stream against a real Redis server: publishers and the loop's one
writer, and how they ride out Redis going away."""

import uuid
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from typing_extensions import override

from contract import keys
from contract.events import EventType
from scripts.embedded_redis import EmbeddedRedis
from streaming import publisher as publisher_module
from streaming.event_log import EventLog, EventLogReader
from streaming.event_writer import EventLogUnavailableError, EventWriter
from streaming.events import Event
from streaming.publisher import TaskEventPublisher
from tests.support import redis_databases

pytestmark = pytest.mark.anyio

BACKEND_DB = redis_databases.OTHER_BACKEND


def _texts(events: list[Event]) -> list[str]:
    return [e.payload()["text"] for e in events if e.type is EventType.CHUNK]


async def test_publisher_coalesces_chunks_within_the_window(redis: Redis, task_id: str) -> None:
    async with (
        EventWriter(redis, maxlen=1000, ttl=60, window=0.05) as writer,
        TaskEventPublisher(writer, task_id) as publisher,
    ):
        for word in ["a", "b", "c"]:
            await publisher.chunk(word)
        await publisher.publish(EventType.PROGRESS, {"progress": 50, "stage": "generating"})
        await publisher.chunk("d")

    events = await EventLogReader(redis).read_after(task_id, None)
    assert [(e.type, e.payload()) for e in events] == [
        (EventType.CHUNK, {"text": "abc", "index": 0}),
        (EventType.PROGRESS, {"progress": 50, "stage": "generating"}),
        (EventType.CHUNK, {"text": "d", "index": 1}),
    ]


async def test_publisher_flushes_a_lone_chunk_after_the_window(redis: Redis, task_id: str) -> None:
    reader = EventLogReader(redis)

    async with (
        EventWriter(redis, maxlen=1000, ttl=60, window=0.01) as writer,
        TaskEventPublisher(writer, task_id) as publisher,
    ):
        await publisher.chunk("alone")
        with anyio.fail_after(5):
            while not await reader.read_after(task_id, None):
                await anyio.sleep(0.005)

    assert _texts(await reader.read_after(task_id, None)) == ["alone"]


async def test_an_attempts_first_chunk_is_not_held_by_the_window(
    redis: Redis, task_id: str
) -> None:
    """A reader waits on the first text; the window only holds the ones after it."""
    reader = EventLogReader(redis)

    async with EventWriter(redis, maxlen=1000, ttl=60, window=60.0) as writer:
        publisher = TaskEventPublisher(writer, task_id)
        await publisher.chunk("first")
        with anyio.fail_after(5):
            while not await reader.read_after(task_id, None):
                await anyio.sleep(0.005)
        await publisher.chunk("second")
        await anyio.sleep(0.2)
        assert _texts(await reader.read_after(task_id, None)) == ["first"]
        await publisher.flush()

    assert _texts(await reader.read_after(task_id, None)) == ["first", "second"]


async def test_one_writer_sends_every_task_of_its_loop_in_order_in_few_round_trips(
    redis: Redis,
) -> None:
    task_ids = [f"writer-{uuid.uuid4().hex}" for _ in range(50)]
    before = await _commands_run(redis)
    round_trips = 0

    class CountingWriter(EventWriter):
        @override
        async def _pipeline(
            self, calls: dict[int, tuple[list[str], list[bytes | str | int]]]
        ) -> dict[int, object]:
            nonlocal round_trips
            round_trips += 1
            return await super()._pipeline(calls)

    async def one_task(writer: EventWriter, task_id: str) -> None:
        async with TaskEventPublisher(writer, task_id) as publisher:
            await publisher.publish(EventType.STATUS, {"status": "running"})
            for i in range(20):
                await publisher.chunk(f"{i},")
                await anyio.sleep(0.001)
            await publisher.publish(EventType.RESULT, {"content": "done"})

    async with (
        # A window many times the chunks' 1 ms pauses, so that it merges them even when a busy
        # machine stretches each pause several-fold.
        CountingWriter(redis, maxlen=1000, ttl=60, window=0.02) as writer,
        anyio.create_task_group() as tg,
    ):
        for task_id in task_ids:
            tg.start_soon(one_task, writer, task_id)

    reader = EventLogReader(redis)
    for task_id in task_ids:
        events = await reader.read_after(task_id, None)
        assert events[0].type is EventType.STATUS
        assert events[-1].type is EventType.RESULT
        assert "".join(_texts(events)) == "".join(f"{i}," for i in range(20))
        chunks = [e.payload()["index"] for e in events if e.type is EventType.CHUNK]
        assert chunks == list(range(len(chunks)))
    script_calls = await _commands_run(redis) - before
    print(f"{script_calls} script calls for 50 tasks in {round_trips} round trips")
    # The window merged each task's chunks into a few events, and the 50 tasks' script calls
    # shared round trips: each carried ten or more.
    assert script_calls < 50 * 12, script_calls
    assert 0 < round_trips * 10 < script_calls, (round_trips, script_calls)


async def test_a_failed_write_is_raised_in_the_task_that_published_not_its_batch_mates(
    redis: Redis, task_id: str
) -> None:
    await redis.lpush(keys.task_events("broken"), "not a stream")  # its XADD will fail
    async with EventWriter(redis, maxlen=1000, ttl=60, window=60.0) as writer:
        healthy = TaskEventPublisher(writer, task_id)
        broken = TaskEventPublisher(writer, "broken")
        await broken.chunk("lost")
        await healthy.chunk("kept")
        await healthy.flush()  # one batch carries both
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await broken.chunk("next")

    assert _texts(await EventLogReader(redis).read_after(task_id, None)) == ["kept"]


async def test_a_state_goes_with_the_next_batch_or_alone_after_the_window(
    redis: Redis, task_id: str
) -> None:
    state = keys.celery_task_meta(task_id)
    async with EventWriter(redis, maxlen=1000, ttl=60, window=0.05, state_expires=60) as writer:
        publisher = TaskEventPublisher(writer, task_id)
        publisher.state_with_next(b"PROGRESS 1")
        await publisher.publish(EventType.PROGRESS, {"progress": 10, "stage": "starting"})
        assert await redis.get(state) == b"PROGRESS 1"

        publisher.state_with_next(b"PROGRESS 2")
        with anyio.fail_after(5):
            while await redis.get(state) != b"PROGRESS 2":
                await anyio.sleep(0.01)
    assert 0 < await redis.ttl(state) <= 60


async def test_a_state_on_another_database_is_written_there(
    redis: Redis, redis_server: EmbeddedRedis, task_id: str
) -> None:
    backend = Redis.from_url(f"{redis_server.url.rsplit('/', 1)[0]}/{BACKEND_DB}")
    try:
        async with EventWriter(
            redis, maxlen=1000, ttl=60, window=0.0, state_expires=60, backend=backend
        ) as writer:
            publisher = TaskEventPublisher(writer, task_id)
            publisher.state_with_next(b"PROGRESS")
            await publisher.publish(EventType.PROGRESS, {"progress": 10, "stage": "starting"})
        assert await backend.get(keys.celery_task_meta(task_id)) == b"PROGRESS"
        assert await redis.get(keys.celery_task_meta(task_id)) is None
    finally:
        await backend.aclose()


async def test_no_state_is_written_after_the_outcome(redis: Redis, task_id: str) -> None:
    await EventLog(redis, maxlen=1000, ttl=60).append(
        task_id, [(EventType.RESULT, {"content": "done"})]
    )
    await redis.set(keys.celery_task_meta(task_id), b"SUCCESS")
    async with EventWriter(redis, maxlen=1000, ttl=60, window=0.0) as writer:
        publisher = TaskEventPublisher(writer, task_id)
        publisher.state_with_next(b"PROGRESS")
        await publisher.publish(EventType.PROGRESS, {"progress": 50, "stage": "generating"})

    assert await redis.get(keys.celery_task_meta(task_id)) == b"SUCCESS"


async def test_a_payload_that_is_not_json_fails_its_own_task_not_the_batch(
    redis: Redis, task_id: str
) -> None:
    async with EventWriter(redis, maxlen=1000, ttl=60, window=60.0) as writer:
        healthy = TaskEventPublisher(writer, task_id)
        careless = TaskEventPublisher(writer, f"careless-{task_id}")
        await healthy.chunk("kept")
        with pytest.raises(TypeError):
            await careless.publish(EventType.PROGRESS, {"stage": object()})

    assert _texts(await EventLogReader(redis).read_after(task_id, None)) == ["kept"]


async def test_after_a_failed_write_a_publisher_writes_nothing_more(
    redis: Redis, task_id: str
) -> None:
    await redis.lpush(keys.task_events(task_id), "not a stream")

    async def careless_agent(writer: EventWriter) -> None:
        async with TaskEventPublisher(writer, task_id) as publisher:
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await publisher.chunk("lost")
            await redis.delete(keys.task_events(task_id))
            await publisher.chunk("after the gap")  # the agent carries on regardless

    async with EventWriter(redis, maxlen=1000, ttl=60, window=0.0) as writer:
        with pytest.raises(ResponseError, match="WRONGTYPE"):  # its end raises it again
            await careless_agent(writer)

    assert await EventLogReader(redis).read_after(task_id, None) == []


async def test_nothing_is_appended_after_the_outcome(redis: Redis, task_id: str) -> None:
    await EventLog(redis, maxlen=1000, ttl=60).append(
        task_id, [(EventType.RESULT, {"content": "done"})]
    )
    async with (
        EventWriter(redis, maxlen=1000, ttl=60, window=0.0) as writer,
        TaskEventPublisher(writer, task_id) as publisher,
    ):
        await publisher.chunk("too late")

    events = await EventLogReader(redis).read_after(task_id, None)
    assert [e.type for e in events] == [EventType.RESULT]
    assert await redis.get(keys.task_content(task_id)) is None


async def test_a_publisher_leaving_without_error_waits_for_its_writes_on_their_way(
    redis: Redis, task_id: str
) -> None:
    await redis.lpush(keys.task_events(task_id), "not a stream")

    class SlowWriter(EventWriter):  # a round trip that takes 50 ms
        async def _send(self, taken: Any) -> list[Exception | None]:
            await anyio.sleep(0.05)
            return await super()._send(taken)

    async def one_task(writer: EventWriter) -> None:
        async with TaskEventPublisher(writer, task_id) as publisher:
            await publisher.chunk("taken by the writer at once")
            await anyio.sleep(0.01)  # taken, not written yet: nothing is left to flush

    async with SlowWriter(redis, maxlen=1000, ttl=60, window=0.001) as writer:
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await one_task(writer)


async def test_a_publisher_leaving_with_an_error_writes_what_came_before_it(
    redis: Redis, task_id: str
) -> None:
    """A client keeps what it saw up to a failure: a retry's reset or the error follows it."""

    async def one_task(writer: EventWriter) -> None:
        async with TaskEventPublisher(writer, task_id) as publisher:
            await publisher.publish(EventType.STATUS, {"status": "running"})
            await publisher.chunk("said before")
            publisher.state_with_next(b"PROGRESS")
            raise RuntimeError("the agent failed")

    async with EventWriter(redis, maxlen=1000, ttl=60, window=60.0) as writer:
        with pytest.raises(RuntimeError, match="the agent failed"):
            await one_task(writer)

    events = await EventLogReader(redis).read_after(task_id, None)
    assert [e.type for e in events] == [EventType.STATUS, EventType.CHUNK]
    assert await redis.get(keys.celery_task_meta(task_id)) == b"PROGRESS"


async def test_a_publisher_leaving_with_an_error_drops_what_redis_will_not_take(
    redis: Redis, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher_module, "IN_FLIGHT_WAIT", 0.3)
    async with FlakyWriter(redis, maxlen=1000, ttl=60, window=60.0, outage_limit=30) as writer:

        async def one_task() -> None:
            async with TaskEventPublisher(writer, task_id) as publisher:
                await publisher.publish(EventType.STATUS, {"status": "running"})
                writer.down = True
                await publisher.chunk("never sent")
                raise RuntimeError("Redis went away")

        with anyio.fail_after(5), pytest.raises(RuntimeError):
            await one_task()
        writer.down = False

    events = await EventLogReader(redis).read_after(task_id, None)
    assert [e.type for e in events] == [EventType.STATUS]


async def _commands_run(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


class FlakyWriter(EventWriter):
    """A writer whose round trips fail as a lost connection does while ``down``; with
    ``replies_lost``, the next one reaches Redis but its replies are lost."""

    down = False
    replies_lost = 0

    @override
    async def _pipeline(
        self, calls: dict[int, tuple[list[str], list[bytes | str | int]]]
    ) -> dict[int, object]:
        if self.down:
            raise RedisConnectionError("Connection refused")
        replies = await super()._pipeline(calls)
        if self.replies_lost:
            self.replies_lost -= 1
            raise RedisConnectionError("Connection reset by peer")
        return replies


async def test_an_outage_shorter_than_the_limit_loses_and_repeats_nothing(
    redis: Redis, task_id: str
) -> None:
    async with (
        FlakyWriter(redis, maxlen=1000, ttl=60, window=0.0, outage_limit=30) as writer,
        TaskEventPublisher(writer, task_id) as publisher,
    ):
        await publisher.chunk("before ")
        writer.down = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher.chunk, "during ")
            await anyio.sleep(0.3)  # a few refused attempts
            writer.down = False
        writer.replies_lost = 1  # applied, but the worker never hears it was
        await publisher.chunk("lost reply ")
        await publisher.chunk("after")

    assert "".join(_texts(await EventLogReader(redis).read_after(task_id, None))) == (
        "before during lost reply after"
    )


async def test_an_outage_past_the_limit_fails_the_publisher(redis: Redis, task_id: str) -> None:
    async with FlakyWriter(redis, maxlen=1000, ttl=60, window=0.0, outage_limit=0.2) as writer:
        writer.down = True
        publisher = TaskEventPublisher(writer, task_id)
        with pytest.raises(EventLogUnavailableError, match="did not take"):
            await publisher.chunk("never written")


async def test_batches_redis_lost_are_replaced_by_a_reset_with_the_whole_answer(
    redis: Redis, task_id: str
) -> None:
    async with (
        EventWriter(redis, maxlen=1000, ttl=60, window=0.0) as writer,
        TaskEventPublisher(writer, task_id, attempt=2) as publisher,
    ):
        await publisher.chunk("one ")
        await publisher.chunk("two ")
        # Redis restarts from a file that missed the last writes.
        await redis.delete(keys.task_events(task_id), keys.task_content(task_id))
        await redis.delete(keys.task_written(task_id))
        await publisher.chunk("three")

    events = await EventLogReader(redis).read_after(task_id, None)
    assert [e.type for e in events] == [EventType.RESET]
    assert events[0].payload() == {"attempt": 2, "content": "one two three"}
    assert await redis.get(keys.task_content(task_id)) == b"one two three"
