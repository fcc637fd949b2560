"""Cursors: what is an event id, and a subscription whose cursor is ahead of its log still ends
with the task (against a real Redis server)."""

import anyio
import pytest
from redis.asyncio import Redis

from contract.events import EventType
from streaming.event_log import EventLog
from streaming.events import InvalidEventIdError, parse_event_id
from streaming.hub import EventHub


@pytest.mark.parametrize(
    "value",
    [
        "\u0661-\u0661",  # Arabic-Indic digits: ``\d`` matches them, Redis does not
        "1-1\n",  # ``$`` matches before a trailing newline
        "\n1-1",
        " 1-1",
        "1-",
        "-1",
        "1",
        "1-1-1",
        "18446744073709551616-0",
        "0-18446744073709551616",
        "1" * 21 + "-0",
        "",
        "\ud800-1",
    ],
)
def test_parse_event_id_refuses_what_redis_would_not_take(value: str) -> None:
    with pytest.raises(InvalidEventIdError):
        parse_event_id(value)


@pytest.mark.parametrize(
    ("value", "order"),
    [
        ("0-0", (0, 0)),
        ("1700000000000-3", (1700000000000, 3)),
        ("18446744073709551615-1", (2**64 - 1, 1)),
    ],
)
def test_parse_event_id_reads_an_event_id(value: str, order: tuple[int, int]) -> None:
    assert parse_event_id(value) == order


@pytest.mark.anyio
async def test_subscription_with_a_cursor_ahead_of_the_log_ends_with_the_task(
    redis: Redis, task_id: str
) -> None:
    log = EventLog(redis, maxlen=1000, ttl=60)
    await log.append(task_id, [(EventType.STATUS, {"status": "running"})])

    async with EventHub(redis) as hub:
        subscription = await hub.subscribe(task_id)
        batches = subscription.batches(after="99999999999999-0")
        with anyio.fail_after(10):
            # A poke makes the first batch come from the live loop: the log was read already.
            subscription.listener.poke()
            assert await batches.__anext__() == []
            await log.append(task_id, [(EventType.CHUNK, {"text": "a", "index": 0})])
            await log.append(task_id, [(EventType.RESULT, {"content": "a"})])
            rest = [batch async for batch in batches]

    assert rest == []
    assert hub.listener_count == 0
