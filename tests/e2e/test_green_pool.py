"""A worker started with Celery's gevent pool stops at once, with one line naming the pool to use
(``worker.pool_guard``), instead of failing its tasks with "Already running asyncio in this
thread"."""

import pytest

from scripts.embedded_redis import EmbeddedRedis
from tests.support import redis_databases
from teststack.processes import ManagedProcess, python_module, wait_for
from teststack.stack import base_env, redis_db_url

pytest.importorskip("gevent", reason="gevent is not installed")
GREEN_DB = redis_databases.GREEN


def test_worker_refuses_the_gevent_pool_with_one_clear_line(redis_server: EmbeddedRedis) -> None:
    argv = python_module(
        "celery", "-A", "worker.celery_app", "worker", "--pool", "gevent", "--concurrency", "10",
        "--loglevel", "INFO", "--without-mingle", "--without-gossip",
    )  # fmt: skip
    worker = ManagedProcess(
        "celery-worker-gevent", argv, env=base_env(redis_db_url(redis_server.url, GREEN_DB))
    )
    worker.start()
    try:
        wait_for(
            lambda: not worker.alive() or " ready." in worker.output(),
            timeout=60,
            message=worker.output,
        )
        assert worker.process is not None
        status, output = worker.process.returncode, worker.output()
    finally:
        worker.stop()
    assert status == 78, output
    assert "--pool threads" in output
    assert " ready." not in output, "it started consuming before refusing"
