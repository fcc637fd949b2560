"""Who sends a task its web process recorded and did not send, against a real Redis server."""

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from contract import keys
from contract.task_record import TaskRecord, encode_record
from contract.tasks import INVOKE_AGENT_ASYNC
from scripts.embedded_redis import EmbeddedRedis
from tests.support import redis_databases
from teststack.stack import redis_db_url
from worker.recovery import resend


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_db_url(redis_server.url, redis_databases.UNIT)) as client:
        yield client


def _record() -> TaskRecord:
    return TaskRecord(
        task_id=str(uuid.uuid4()),
        owner="alice",
        agent_id="echo",
        task_name=INVOKE_AGENT_ASYNC,
        created_at=time.time(),
        kwargs={"agent_id": "echo", "message": "hi"},
    )


def test_only_one_taker_sends_an_unsent_task_and_a_failed_send_gives_it_back(
    client: redis.Redis,
) -> None:
    record = _record()
    key = keys.task_record(record.task_id)
    for name, value in encode_record(record).items():
        client.hset(key, name, value)
    client.expire(key, 600)
    try:
        assert resend.take_unsent(client, record)
        assert not resend.take_unsent(client, record), "taken once only"
        assert client.zscore(keys.OPEN_TASKS, record.task_id) is not None
        assert client.ttl(key) > 0, "the record keeps its expiry"

        resend.give_back(client, record)
        assert client.zscore(keys.OPEN_TASKS, record.task_id) is None
        assert resend.take_unsent(client, record), "the next pass may try again"
    finally:
        client.delete(key)
        client.zrem(keys.OPEN_TASKS, record.task_id)


def test_a_task_whose_record_is_gone_is_not_taken_and_not_recreated(client: redis.Redis) -> None:
    """The web undid it (its send failed first): nothing to send, and no bare record left."""
    record = _record()

    assert not resend.take_unsent(client, record)
    assert not client.exists(keys.task_record(record.task_id))
    assert client.zscore(keys.OPEN_TASKS, record.task_id) is None
