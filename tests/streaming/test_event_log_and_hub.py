"""The event log, the publisher and the hub against a real Redis server."""

import uuid
from typing import Any

import anyio
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from scripts.embedded_redis import EmbeddedRedis
from streaming import keys
from streaming.event_log import BlockingEventLog, EventLog, EventLogReader
from streaming.event_writer import EventWriter
from streaming.events import Event, EventType
from streaming.hub import EventHub
from streaming.hub import _Channel as hub_channel
from streaming.publisher import TaskEventPublisher

pytestmark = pytest.mark.anyio


async def _collect(hub: EventHub, task_id: str, after: str | None = None) -> list[Event]:
    return [event async for event in hub.listen(task_id, after=after)]


def _texts(events: list[Event]) -> list[str]:
    return [e.payload()["text"] for e in events if e.type is EventType.CHUNK]


async def test_append_writes_log_content_and_expiry_in_one_call(redis: Redis, task_id: str) -> None:
    log = EventLog(redis, maxlen=1000, ttl=60)

    ids = await log.append(
        task_id,
        [
            (EventType.STATUS, {"status": "running"}),
            (EventType.CHUNK, {"text": "Hel", "index": 0}),
            (EventType.CHUNK, {"text": "lo", "index": 1}),
        ],
    )

    events = await EventLogReader(redis).read_after(task_id, None)
    assert [e.id for e in events] == ids
    assert [e.type for e in events] == [EventType.STATUS, EventType.CHUNK, EventType.CHUNK]
    assert await redis.get(keys.task_content(task_id)) == b"Hello"
    assert 0 < await redis.ttl(keys.task_events(task_id)) <= 60
    assert (await EventLogReader(redis).read_after(task_id, ids[0]))[0].id == ids[1]


async def test_reset_replaces_the_content_so_far(redis: Redis, task_id: str) -> None:
    log = EventLog(redis, maxlen=1000, ttl=60)
    await log.append(task_id, [(EventType.CHUNK, {"text": "partial", "index": 0})])

    await log.append(task_id, [(EventType.RESET, {"attempt": 2, "content": ""})])
    await log.append(task_id, [(EventType.CHUNK, {"text": "whole", "index": 0})])

    assert await redis.get(keys.task_content(task_id)) == b"whole"
    assert await redis.get(keys.task_attempt(task_id)) == b"2"


async def test_cursor_older_than_the_capped_log_gets_one_reset_with_the_content(
    redis: Redis, task_id: str
) -> None:
    log = EventLog(redis, maxlen=100, ttl=60)
    first = await log.append(task_id, [(EventType.CHUNK, {"text": "a", "index": 0})])
    for index in range(1, 400):
        await log.append(task_id, [(EventType.CHUNK, {"text": "b", "index": index})])

    page = await EventLogReader(redis).read_after(task_id, first[0])

    assert [e.type for e in page] == [EventType.RESET]
    assert page[0].payload() == {"attempt": 1, "content": "a" + "b" * 399}
    ((last_id, _),) = await redis.xrevrange(keys.task_events(task_id), count=1)
    assert page[0].id == last_id.decode()


async def test_trimmed_log_ending_in_a_terminal_event_delivers_it_after_the_reset(
    redis: Redis, task_id: str
) -> None:
    log = EventLog(redis, maxlen=100, ttl=60)
    for index in range(400):
        await log.append(task_id, [(EventType.CHUNK, {"text": "x", "index": index})])
    await log.append(task_id, [(EventType.RESULT, {"content": "x" * 400})])

    page = await EventLogReader(redis).read_after(task_id, None)

    assert [e.type for e in page] == [EventType.RESET, EventType.RESULT]
    assert page[0].payload()["content"] == "x" * 400
    assert page[0].order < page[1].order


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


async def test_one_writer_sends_every_task_of_its_loop_in_order_in_few_round_trips(
    redis: Redis,
) -> None:
    task_ids = [f"writer-{uuid.uuid4().hex}" for _ in range(50)]
    before = await _commands_run(redis)
    round_trips = 0

    class CountingWriter(EventWriter):
        async def _pipeline(self, packed: Any, sets: Any = ()) -> list[object]:
            nonlocal round_trips
            round_trips += 1
            return await super()._pipeline(packed, sets)

    async def one_task(writer: EventWriter, task_id: str) -> None:
        async with TaskEventPublisher(writer, task_id) as publisher:
            await publisher.publish(EventType.STATUS, {"status": "running"})
            for i in range(20):
                await publisher.chunk(f"{i},")
                await anyio.sleep(0.001)
            await publisher.publish(EventType.RESULT, {"content": "done"})

    async with (
        CountingWriter(redis, maxlen=1000, ttl=60, window=0.005) as writer,
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
    # The window merged each task's chunks into a few events, and the 50 tasks' script calls
    # shared round trips: each carried ten or more.
    assert script_calls < 50 * 12, script_calls
    assert round_trips * 10 < script_calls, (round_trips, script_calls)


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


async def test_a_set_goes_with_the_next_batch_or_alone_after_the_window(
    redis: Redis, task_id: str
) -> None:
    async with EventWriter(redis, maxlen=1000, ttl=60, window=0.05) as writer:
        publisher = TaskEventPublisher(writer, task_id)
        publisher.set_with_next(f"state-{task_id}", b"PROGRESS", expires=60)
        await publisher.publish(EventType.PROGRESS, {"progress": 10, "stage": "starting"})
        assert await redis.get(f"state-{task_id}") == b"PROGRESS"

        publisher.set_with_next(f"alone-{task_id}", b"1", expires=60)
        with anyio.fail_after(5):
            while await redis.get(f"alone-{task_id}") is None:
                await anyio.sleep(0.01)
    assert 0 < await redis.ttl(f"alone-{task_id}") <= 60


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


async def test_a_publisher_leaving_with_an_error_drops_what_it_has_not_sent(
    redis: Redis, task_id: str
) -> None:

    async def one_task(writer: EventWriter) -> None:
        async with TaskEventPublisher(writer, task_id) as publisher:
            await publisher.publish(EventType.STATUS, {"status": "running"})
            await publisher.chunk("never sent")
            publisher.set_with_next(f"state-{task_id}", b"PROGRESS", expires=60)
            raise RuntimeError("the agent failed")

    async with EventWriter(redis, maxlen=1000, ttl=60, window=60.0) as writer:
        with pytest.raises(RuntimeError, match="the agent failed"):
            await one_task(writer)

    events = await EventLogReader(redis).read_after(task_id, None)
    assert [e.type for e in events] == [EventType.STATUS]
    assert await redis.get(f"state-{task_id}") is None


async def _commands_run(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_listener_gets_replay_then_live_events_without_gap_or_duplicate(
    redis: Redis, task_id: str
) -> None:
    log = EventLog(redis, maxlen=10_000, ttl=60)
    await log.append(task_id, [(EventType.CHUNK, {"text": f"{i},", "index": i}) for i in range(50)])

    async with EventHub(redis) as hub, anyio.create_task_group() as tg:
        results: list[list[Event]] = []

        async def listen() -> None:
            results.append(await _collect(hub, task_id))

        tg.start_soon(listen)
        with anyio.fail_after(5):
            while hub.listener_count == 0:
                await anyio.sleep(0.001)
        for i in range(50, 300):
            await log.append(task_id, [(EventType.CHUNK, {"text": f"{i},", "index": i})])
        await log.append(task_id, [(EventType.RESULT, {"content": "done"})])

    (events,) = results
    assert _texts(events) == [f"{i}," for i in range(300)]
    assert events[-1].type is EventType.RESULT
    assert hub.listener_count == 0


async def test_slow_listener_catches_up_from_the_log_with_bounded_buffer(
    redis: Redis, task_id: str
) -> None:
    log = EventLog(redis, maxlen=10_000, ttl=60)

    async with EventHub(redis, buffer_size=8) as hub:
        subscription = await hub.subscribe(task_id)
        events = subscription.events()
        await log.append(task_id, [(EventType.STATUS, {"status": "running"})])
        first = await events.__anext__()
        for i in range(2000):  # nobody reads: the buffer overflows
            await log.append(task_id, [(EventType.CHUNK, {"text": f"{i},", "index": i})])
        await log.append(task_id, [(EventType.RESULT, {"content": "done"})])
        with anyio.fail_after(5):
            while not hub._channels[keys.task_channel(task_id)].listeners.copy().pop().lagging:
                await anyio.sleep(0.01)
        rest = [event async for event in events]

    assert first.type is EventType.STATUS
    assert _texts(rest) == [f"{i}," for i in range(2000)]
    assert rest[-1].type is EventType.RESULT
    assert hub.listener_count == 0


async def test_a_poked_idle_listener_yields_an_empty_batch_then_goes_on(
    redis: Redis, task_id: str
) -> None:
    log = EventLog(redis, maxlen=1000, ttl=60)
    await log.append(task_id, [(EventType.STATUS, {"status": "running"})])

    async with EventHub(redis) as hub:
        subscription = await hub.subscribe(task_id)
        batches = subscription.batches()
        with anyio.fail_after(5):
            replayed = await batches.__anext__()
            subscription.listener.poke()
            poked = await batches.__anext__()
            await log.append(task_id, [(EventType.RESULT, {"content": "done"})])
            rest = [batch async for batch in batches]

    assert [e.type for e in replayed] == [EventType.STATUS]
    assert poked == []
    assert [[e.type for e in batch] for batch in rest] == [[EventType.RESULT]]
    assert hub.listener_count == 0


async def test_listener_resumes_exactly_after_its_cursor(redis: Redis, task_id: str) -> None:
    log = EventLog(redis, maxlen=10_000, ttl=60)
    ids = await log.append(
        task_id, [(EventType.CHUNK, {"text": str(i), "index": i}) for i in range(10)]
    )
    await log.append(task_id, [(EventType.RESULT, {"content": "done"})])

    async with EventHub(redis) as hub:
        events = await _collect(hub, task_id, after=ids[3])

    assert _texts(events) == [str(i) for i in range(4, 10)]


async def test_hub_releases_its_connections_when_idle(
    redis: Redis, redis_server: EmbeddedRedis, task_id: str
) -> None:
    name = f"hub-{task_id[:8]}"
    stream_client = Redis.from_url(f"{redis_server.url.rsplit('/', 1)[0]}/7", client_name=name)

    async def connections() -> int:
        return sum(1 for c in await redis.client_list() if c.get("name") == name)

    await EventLog(redis, maxlen=100, ttl=60).append(
        task_id, [(EventType.RESULT, {"content": "done"})]
    )
    try:
        async with EventHub(stream_client, release_after=0.1) as hub:
            assert [e.type for e in await _collect(hub, task_id)] == [EventType.RESULT]
            assert await connections() >= 1
            with anyio.fail_after(5):
                while await connections():
                    await anyio.sleep(0.02)
    finally:
        await stream_client.aclose()


@pytest.mark.parametrize(
    ("last", "appended"),
    [(EventType.CHUNK, True), (EventType.RESULT, False), (EventType.CANCELLED, False)],
)
def test_blocking_append_unless_ended_adds_nothing_after_a_terminal_event(
    redis_server: EmbeddedRedis, task_id: str, last: EventType, appended: bool
) -> None:
    client = SyncRedis.from_url(f"{redis_server.url.rsplit('/', 1)[0]}/7")
    try:
        log = BlockingEventLog(client, maxlen=100, ttl=60)
        first = {"text": "a", "index": 0} if last is EventType.CHUNK else {"content": "a"}
        log.append(task_id, [(last, first)])

        ids = log.append(task_id, [(EventType.RESULT, {"content": "b"})], unless_ended=True)

        assert bool(ids) is appended
        assert client.xlen(keys.task_events(task_id)) == (2 if appended else 1)
    finally:
        client.close()


async def test_a_stale_subscribe_confirmation_does_not_confirm_a_recreated_channel(
    redis: Redis, task_id: str
) -> None:
    """Subscribe, unsubscribe, subscribe again: Redis answers in order, so the first SUBSCRIBE's
    confirmation, arriving before the UNSUBSCRIBE's, says nothing about the second."""
    hub = EventHub(redis)
    name = keys.task_channel(task_id)
    hub._channels[name] = channel = hub_channel(task_id)
    hub._unsubscribing[name] = 1  # the first subscription's UNSUBSCRIBE is on its way

    hub._dispatch({"type": "subscribe", "channel": name.encode(), "data": 1})
    assert not channel.confirmed.is_set()
    hub._dispatch({"type": "unsubscribe", "channel": name.encode(), "data": 0})
    hub._dispatch({"type": "subscribe", "channel": name.encode(), "data": 1})

    assert channel.confirmed.is_set()
    assert hub._unsubscribing == {}


async def test_an_idle_listener_that_missed_an_announcement_gets_the_event(
    redis: Redis, task_id: str
) -> None:
    log = EventLog(redis, maxlen=1000, ttl=60)
    await log.append(task_id, [(EventType.CHUNK, {"text": "seen", "index": 0})])

    async with EventHub(redis, idle_check=0.2) as hub:
        subscription = await hub.subscribe(task_id)
        events = subscription.events()
        assert _texts([await anext(events)]) == ["seen"]
        # Written to the log without an announcement, as when a PUBLISH is lost.
        await redis.xadd(keys.task_events(task_id), {"e": "result", "d": '{"content":"x"}'})

        with anyio.fail_after(3):
            last = await anext(events)
        await events.aclose()

    assert last.type is EventType.RESULT


async def test_a_failed_log_read_is_retried_not_the_end_of_the_stream(
    redis: Redis, task_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog(redis, maxlen=1000, ttl=60)
    await log.append(task_id, [(EventType.RESULT, {"content": "whole"})])
    real_read = EventLogReader.read_after
    failures = [RedisConnectionError("No connection available.")] * 2

    async def flaky(self: EventLogReader, task: str, cursor: str | None) -> list[Event]:
        if failures:
            raise failures.pop()
        return await real_read(self, task, cursor)

    monkeypatch.setattr(EventLogReader, "read_after", flaky)

    async with EventHub(redis) as hub:
        with anyio.fail_after(5):
            events = await _collect(hub, task_id)

    assert [e.type for e in events] == [EventType.RESULT]
    assert failures == []
