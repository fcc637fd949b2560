"""``DeliveryRecovery.heal_user_slots`` against a real Redis server: every user with active
tasks is looked at within a bounded number of passes, however many users there are."""

import math
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from contract import keys
from scripts.embedded_redis import EmbeddedRedis
from tests.support import redis_databases
from teststack.stack import redis_db_url
from worker.recovery.redelivery import SLOT_GRACE, USERS_PER_PASS, DeliveryRecovery


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_db_url(redis_server.url, redis_databases.UNIT)) as client:
        yield client


def test_a_vanished_tasks_slot_is_freed_for_every_user_within_a_sweep(
    client: redis.Redis,
) -> None:
    # Many users, each holding the slot of a task that vanished (no record, no log), taken
    # before the grace period: the last user's slot must not wait on luck.
    users = [f"slots-{uuid.uuid4().hex}" for _ in range(5 * USERS_PER_PASS // 2)]
    taken = time.time() - SLOT_GRACE - 5
    with client.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.zadd(keys.user_active_tasks(user), {str(uuid.uuid4()): taken})
            pipe.sadd(keys.USERS_WITH_ACTIVE_TASKS, user)
        pipe.execute()
    recovery = DeliveryRecovery(cast(Any, None), client, lease_seconds=10)
    try:
        # Other tests' users may share the set: a sweep is as many passes as all of them need.
        passes = math.ceil(client.scard(keys.USERS_WITH_ACTIVE_TASKS) / USERS_PER_PASS) + 1
        freed = sum(recovery.heal_user_slots()[0] for _ in range(passes))

        left = [user for user in users if client.zcard(keys.user_active_tasks(user))]
        assert left == [], f"{len(left)} of {len(users)} users still hold a vanished slot"
        assert freed >= len(users)
    finally:
        with client.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.delete(keys.user_active_tasks(user))
            pipe.srem(keys.USERS_WITH_ACTIVE_TASKS, *users)
            pipe.execute()
