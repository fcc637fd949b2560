"""A stream whose log vanishes under it (Redis came back without its data) ends, never hangs."""

import anyio
import pytest
from redis.asyncio import Redis

from contract import keys
from contract.events import EventType
from streaming.event_log import EventLog
from streaming.hub import EventHub
from streaming.subscription import TASK_LOST

pytestmark = pytest.mark.anyio


async def test_stream_ends_with_task_lost_when_its_log_vanishes(redis: Redis, task_id: str) -> None:
    log = EventLog(redis, maxlen=1000, ttl=60)
    await log.append(task_id, [(EventType.STATUS, {"status": "running"})])
    received = []
    async with EventHub(redis) as hub:
        subscription = await hub.subscribe(task_id)
        with anyio.fail_after(10):
            async for event in subscription.events():
                received.append(event)
                if len(received) == 1:
                    # What a lost Redis does: the log is gone, and the hub, reconnected, sends
                    # every listener back to the log.
                    await redis.delete(keys.task_events(task_id))
                    subscription.listener.fall_behind()

    assert [e.type for e in received] == [EventType.STATUS, EventType.ERROR]
    assert received[1].payload() == TASK_LOST
    assert received[1].order > received[0].order


async def test_stream_of_a_live_log_keeps_waiting_after_falling_behind(
    redis: Redis, task_id: str
) -> None:
    log = EventLog(redis, maxlen=1000, ttl=60)
    await log.append(task_id, [(EventType.STATUS, {"status": "running"})])
    received = []
    async with EventHub(redis) as hub:
        subscription = await hub.subscribe(task_id)
        with anyio.fail_after(10):
            async for event in subscription.events():
                received.append(event)
                if len(received) == 1:
                    subscription.listener.fall_behind()
                    await log.append(task_id, [(EventType.RESULT, {"content": ""})])

    assert [e.type for e in received] == [EventType.STATUS, EventType.RESULT]
