"""A worker that cannot run its tasks as configured stops at start-up, saying why, before it takes
one: started with Celery's gevent pool (``worker.pool_guard``: its tasks would fail with "Already
running asyncio in this thread"), or with an ``AGENT_MODULES`` module that does not import."""

import pytest

from scripts.embedded_redis import EmbeddedRedis
from tests.support import redis_databases
from teststack.processes import ManagedProcess, python_module, wait_for
from teststack.stack import base_env, redis_db_url

GREEN_DB = redis_databases.GREEN


def _start_until_ready_or_gone(name: str, pool: str, env: dict[str, str]) -> tuple[int | None, str]:
    """Start a worker and wait until it is consuming or has exited: its exit status, its log."""
    argv = python_module(
        "celery", "-A", "worker.celery_app", "worker", "--pool", pool, "--concurrency", "2",
        "--loglevel", "INFO", "--without-mingle", "--without-gossip",
    )  # fmt: skip
    worker = ManagedProcess(name, argv, env=env)
    worker.start()
    try:
        wait_for(
            lambda: not worker.alive() or " ready." in worker.output(),
            timeout=60,
            message=worker.output,
        )
        assert worker.process is not None
        return worker.process.returncode, worker.output()
    finally:
        worker.stop()


def test_worker_refuses_the_gevent_pool_with_one_clear_line(redis_server: EmbeddedRedis) -> None:
    pytest.importorskip("gevent", reason="gevent is not installed")
    env = base_env(redis_db_url(redis_server.url, GREEN_DB))

    status, output = _start_until_ready_or_gone("celery-worker-gevent", "gevent", env)

    assert status == 78, output
    assert "--pool threads" in output
    assert " ready." not in output, "it started consuming before refusing"


def test_worker_with_an_agent_module_that_does_not_import_stops_naming_it(
    redis_server: EmbeddedRedis,
) -> None:
    """``AGENT_MODULES`` naming a module that is not there stops the worker before it takes a
    task, instead of running without the agents it was given."""
    env = {
        **base_env(redis_db_url(redis_server.url, GREEN_DB)),
        "AGENT_MODULES": "myproject.no_such_agents",
    }

    status, output = _start_until_ready_or_gone("celery-worker-bad-agents", "threads", env)

    assert status == 78, output
    assert "cannot import 'myproject.no_such_agents'" in output
    assert " ready." not in output, "it started consuming before stopping"
