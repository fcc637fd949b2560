"""The worker's lease against a real Redis of the test's own."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from contract import keys
from teststack.redis_server import RedisServer
from worker.celery_app import celery_app
from worker.recovery.lease import WorkerLease
from worker.settings import WorkerSettings


@pytest.fixture
def redis_to_fill(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", persistence="none") as server:
        yield server


def test_the_lease_is_renewed_while_redis_memory_is_full(redis_to_fill: RedisServer) -> None:
    """A full memory longer than the lease must not let a live worker's holder keys lapse
    (another worker would put its deliveries back on their queues)."""
    settings = WorkerSettings(_env_file=None, redis_url=redis_to_fill.url(), worker_lease_seconds=2)
    lease = WorkerLease(celery_app, settings, incarnation="test/1/lease")
    admin = redis_to_fill.client()
    try:
        lease.holding("held-task")
        lease.renew()  # the holder key is new: set
        assert admin.get(keys.task_holder("held-task")) == b"test/1/lease"
        with redis_to_fill.memory_full():
            admin.pexpire(keys.task_holder("held-task"), 300)  # about to lapse
            lease.renew()
            ttl_ms = admin.pttl(keys.task_holder("held-task"))
    finally:
        admin.close()
        lease.stop()

    assert ttl_ms > 1000, "renewed while the memory was full"
