"""A task's event log against a real Redis server: appending, reading after a cursor, trimming."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from contract import keys
from contract.events import EventType
from streaming.event_log import EventLog, EventLogReader
from streaming.events import Event
from teststack.redis_server import RedisServer

pytestmark = pytest.mark.anyio


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
    ((last_id, _),) = await redis.xrevrange(keys.task_events(task_id), count=1) or []
    assert isinstance(last_id, bytes)
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


@pytest.mark.parametrize(
    ("last", "appended"),
    [(EventType.CHUNK, True), (EventType.RESULT, False), (EventType.CANCELLED, False)],
)
async def test_append_unless_ended_adds_nothing_after_a_terminal_event(
    redis: Redis, task_id: str, last: EventType, appended: bool
) -> None:
    log = EventLog(redis, maxlen=100, ttl=60)
    first = {"text": "a", "index": 0} if last is EventType.CHUNK else {"content": "a"}
    await log.append(task_id, [(last, first)])

    ids = await log.append(task_id, [(EventType.RESULT, {"content": "b"})], unless_ended=True)

    assert bool(ids) is appended
    assert await redis.xlen(keys.task_events(task_id)) == (2 if appended else 1)


@pytest.fixture
async def redis_to_fill(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, Redis]]:
    """A Redis of the test's own (its memory gets filled), and a client of it."""
    with RedisServer(tmp_path / "redis", persistence="none") as server:
        client = Redis.from_url(server.url())
        try:
            yield server, client
        finally:
            await client.aclose()


async def test_logs_are_read_while_redis_refuses_writes(
    redis_to_fill: tuple[RedisServer, Redis], task_id: str
) -> None:
    """A full Redis refuses MULTI as it refuses writes; a reader (a client opening or resuming a
    stream) still gets the log: a page after a cursor, and a trimmed log's reset."""
    server, client = redis_to_fill
    trimmed = f"{task_id}-trimmed"
    log = EventLog(client, maxlen=100, ttl=60)
    ids = await log.append(task_id, [(EventType.CHUNK, {"text": "a", "index": 0})])
    ids += await log.append(task_id, [(EventType.CHUNK, {"text": "b", "index": 1})])
    for index in range(400):
        await log.append(trimmed, [(EventType.CHUNK, {"text": "x", "index": index})])
    reader = EventLogReader(client)

    with server.memory_full():
        with pytest.raises(OutOfMemoryError):  # the memory is full indeed
            await log.append(task_id, [(EventType.CHUNK, {"text": "c", "index": 2})])
        after_first = await reader.read_after(task_id, ids[0])
        whole = await reader.read_after(trimmed, None)

    assert [e.id for e in after_first] == ids[1:]
    assert [e.type for e in whole] == [EventType.RESET]
    assert whole[0].payload() == {"attempt": 1, "content": "x" * 400}
