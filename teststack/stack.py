"""The service's own processes, started for real: a Celery worker and the uvicorn web server.

Each is configured only through its environment, exactly as in production; tests talk to them
over HTTP and Redis. ``redis_db_url`` gives each stack its own Redis database so that stacks with
different settings cannot take each other's tasks.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
import redis

from contract.tasks import PRIORITIES, redis_queue_list
from scripts.embedded_redis import free_port
from teststack.processes import ManagedProcess, python_module

API_KEYS = {"alice": "alice-key", "bob": "bob-key"}
WORKER_READY_TIMEOUT = 30.0
WEB_READY_TIMEOUT = 20.0


#: The test stacks' webs serve many tests' tasks and streams as one user: the per-user caps are
#: tested by webs of their own (tests/e2e/test_caps.py).
GENEROUS_CAPS = {
    "MAX_ACTIVE_TASKS_PER_USER": "10000",
    "MAX_URGENT_TASKS_PER_USER": "10000",
    "MAX_STREAMS_PER_USER": "100000",
    "MAX_TOKEN_MINTS_PER_MINUTE": "100000",
}


def queued(client: redis.Redis, queue: str) -> int:
    """Messages waiting in ``queue`` on a Redis broker: the lists of every priority."""
    return sum(int(client.llen(redis_queue_list(queue, p))) for p in PRIORITIES)


def redis_db_url(server_url: str, db: int) -> str:
    return f"{server_url.rsplit('/', 1)[0]}/{db}"


def api_keys_setting() -> str:
    return ",".join(f"{key}:{user}" for user, key in API_KEYS.items())


def headers_for(user: str) -> dict[str, str]:
    return {"X-API-Key": API_KEYS[user]}


def base_env(redis_url: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "test",
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "PYTHONUNBUFFERED": "1",
    }


def start_worker(
    redis_url: str,
    *,
    env: Mapping[str, str] | None = None,
    concurrency: int = 100,
    pool: str = "threads",
    queues: str = "agent-tasks,agent-service",
    name: str | None = None,
) -> ManagedProcess:
    """A Celery worker process (named ``name``, else a name of its own), waited on until it is
    consuming."""
    name = name or f"test-{uuid.uuid4().hex[:8]}@%h"
    argv = python_module(
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        queues,
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "-n",
        name,
        "--loglevel",
        "INFO",
        "--without-mingle",
        "--without-gossip",
    )
    worker = ManagedProcess(
        "celery-worker",
        argv,
        env={**base_env(redis_url), "WORKER_CONCURRENCY": str(concurrency), **(env or {})},
    )
    worker.start()
    try:
        worker.wait_for_output(" ready.", timeout=WORKER_READY_TIMEOUT)
    except BaseException:
        worker.stop()
        raise
    return worker


@dataclass
class WebServer:
    process: ManagedProcess
    base_url: str
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, timeout=10.0)

    def stop(self) -> None:
        self.client.close()
        self.process.stop()


def start_web(
    redis_url: str,
    *,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/readyz",
    port: int | None = None,
) -> WebServer:
    """A uvicorn process serving ``create_app``, waited on until ``ready_path`` answers 200;
    on ``port`` when given (a restart on the same address), on a free port otherwise."""
    port = port or free_port()
    argv = python_module(
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "info",
    )
    process = ManagedProcess(
        "uvicorn",
        argv,
        env={
            **base_env(redis_url),
            "API_KEYS": api_keys_setting(),
            **GENEROUS_CAPS,
            **(env or {}),
        },
    )
    process.start()
    web = WebServer(process=process, base_url=f"http://127.0.0.1:{port}")

    def ready() -> bool:
        try:
            return web.client.get(ready_path).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        process.wait_until(ready, timeout=WEB_READY_TIMEOUT, what=f"{ready_path} to answer 200")
    except BaseException:
        web.stop()
        raise
    return web


def start_beat(
    redis_url: str, *, schedule_file: str, env: Mapping[str, str] | None = None
) -> ManagedProcess:
    """A celery beat process (the Procfile's command), waited on until it has started."""
    argv = python_module(
        "celery",
        "-A",
        "worker.celery_app",
        "beat",
        "--schedule",
        schedule_file,
        "--max-interval",
        "1",
        "--loglevel",
        "INFO",
    )
    beat = ManagedProcess("celery-beat", argv, env={**base_env(redis_url), **(env or {})})
    beat.start()
    try:
        beat.wait_for_output("beat: Starting...", timeout=WORKER_READY_TIMEOUT)
    except BaseException:
        beat.stop()
        raise
    return beat
