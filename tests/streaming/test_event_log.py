"""A task's event log against a real Redis server: appending, reading after a cursor, trimming."""

import pytest
from redis.asyncio import Redis

from contract import keys
from contract.events import EventType
from streaming.event_log import EventLog, EventLogReader
from streaming.events import Event

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
