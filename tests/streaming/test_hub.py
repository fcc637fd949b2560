"""The web's side of streams against a real Redis server: the hub, its listeners, catching up."""

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from contract import keys
from contract.events import EventType
from scripts.embedded_redis import EmbeddedRedis
from streaming.event_log import EventLog, EventLogReader
from streaming.events import Event
from streaming.hub import EventHub
from streaming.hub import _Channel as hub_channel

pytestmark = pytest.mark.anyio


def _texts(events: list[Event]) -> list[str]:
    return [e.payload()["text"] for e in events if e.type is EventType.CHUNK]


async def _collect(hub: EventHub, task_id: str, after: str | None = None) -> list[Event]:
    return [event async for event in hub.listen(task_id, after=after)]


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
