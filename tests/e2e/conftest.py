"""The service as it runs in production, for end-to-end tests: a Celery worker (threads pool) and
uvicorn, on the session's private Redis, calling the loopback LLM server.

``stack`` is the default deployment (session-wide; threads pool, so one shared event loop). A
module that sets ``RUN_IN_BOTH_LOOP_MODES = True`` runs its ``stack`` tests twice: with the shared
loop and with ``AGENT_EVENT_LOOP=per-task`` (a loop per task in the threads pool).
``bare_stack`` runs the prefork pool (so an event loop per task), with no LLM configured and a
one-second soft time limit.
``raw_stack`` publishes every chunk as its own event and sends heartbeats twice a second.
``idle_web`` is a web process with no worker behind it, on a Redis database of its own, where a
test can see that bad input queued nothing.
``ops_stack`` runs as an operator would watch it: JSON logs, the worker's metrics port, and
every process reporting errors to the session's loopback Sentry receiver (``sentry``).
``broker`` is the environment of a stack a test starts itself, once with Redis as the broker and
once with RabbitMQ, on a fresh Redis database (the module's ``BROKER_TEST_DB``).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from scripts.embedded_redis import EmbeddedRedis, free_port
from tests.support import rabbitmq, redis_databases
from tests.support.sentry_receiver import SentryReceiver
from teststack.llm.process import LLMServerProcess
from teststack.processes import ManagedProcess
from teststack.stack import WebServer, redis_db_url, start_web, start_worker

MAIN_DB, BARE_DB, IDLE_DB, RAW_DB = (
    redis_databases.MAIN,
    redis_databases.BARE,
    redis_databases.IDLE,
    redis_databases.RAW,
)
OPS_DB = redis_databases.OPS


@dataclass
class Stack:
    redis_url: str
    web: WebServer
    worker: ManagedProcess | None


def _stack(
    redis_url: str,
    *,
    worker_env: dict[str, str] | None,
    web_env: dict[str, str] | None = None,
    pool: str = "threads",
    broker_url: str | None = None,
) -> Iterator[Stack]:
    """A worker (unless ``worker_env`` is None) and a web process on ``redis_url``; with
    ``broker_url``, the broker is there instead (RabbitMQ), Redis keeping everything else."""
    if broker_url is not None:
        broker = {"CELERY_BROKER_URL": broker_url}
        worker_env = None if worker_env is None else {**worker_env, **broker}
        web_env = {**(web_env or {}), **broker}
    worker = None
    if worker_env is not None:
        concurrency = 100 if pool == "threads" else 2
        worker = start_worker(redis_url, env=worker_env, pool=pool, concurrency=concurrency)
    try:
        web = start_web(redis_url, env=web_env)
        try:
            yield Stack(redis_url=redis_url, web=web, worker=worker)
        finally:
            web.stop()
    finally:
        if worker is not None:
            worker.stop()


def _llm_worker_env(llm_server: LLMServerProcess) -> dict[str, str]:
    return {
        "LLM_BASE_URL": llm_server.base_url,
        "LLM_API_KEY": "test-llm-key",
        "LLM_MODEL": "loopback-model",
        "ECHO_WORD_DELAY": "0",
        "CELERY_TASK_DEFAULT_RETRY_DELAY": "0.1",
        "AGENT_TASK_RATE_LIMIT": "",
        "STREAMING_TASK_RATE_LIMIT": "",
        # The tests' own agents and tools, added as a user adds theirs.
        "AGENT_MODULES": "tests.support.agents",
        "TOOL_TIME_LIMIT": "2",
    }


LOOP_MODES = ["shared", "per-task"]
#: The stack of a module that also runs on RabbitMQ (``RUN_ON_BOTH_BROKERS``).
RABBITMQ = "rabbitmq"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``RUN_IN_BOTH_LOOP_MODES``: the module's ``stack`` tests run in both loop modes;
    ``RUN_ON_BOTH_BROKERS``: also with RabbitMQ as the broker (skipped, saying why, where no
    RabbitMQ answers)."""
    if "stack" not in metafunc.fixturenames:
        return
    params: list[Any] = ["shared"]
    if getattr(metafunc.module, "RUN_IN_BOTH_LOOP_MODES", False):
        params = list(LOOP_MODES)
    if getattr(metafunc.module, "RUN_ON_BOTH_BROKERS", False):
        missing = rabbitmq.unavailable()
        params.append(
            pytest.param(RABBITMQ, marks=pytest.mark.skipif(bool(missing), reason=str(missing)))
        )
    if len(params) > 1:
        metafunc.parametrize("stack", params, indirect=True, scope="session")


@pytest.fixture(
    params=[
        "redis",
        pytest.param(
            RABBITMQ,
            marks=pytest.mark.skipif(
                rabbitmq.unavailable() is not None, reason=str(rabbitmq.unavailable())
            ),
        ),
    ]
)
def broker(request: pytest.FixtureRequest, redis_server: EmbeddedRedis) -> Iterator[dict[str, str]]:
    url = redis_db_url(redis_server.url, request.module.BROKER_TEST_DB)
    client = redis.Redis.from_url(url)
    client.flushdb()  # the session's own Redis: a fresh database per broker
    client.close()
    env = {"REDIS_URL": url, "CELERY_RESULT_BACKEND": url, "CELERY_BROKER_URL": url}
    if request.param == RABBITMQ:
        with rabbitmq.private_vhost() as broker_url:
            yield {**env, "CELERY_BROKER_URL": broker_url}
        return
    yield env


@pytest.fixture(scope="session")
def stack(
    request: pytest.FixtureRequest, redis_server: EmbeddedRedis, llm_server: LLMServerProcess
) -> Iterator[Stack]:
    mode = getattr(request, "param", "shared")
    if mode == RABBITMQ:
        with rabbitmq.private_vhost() as broker_url:
            yield from _stack(
                redis_db_url(redis_server.url, redis_databases.RABBITMQ_STREAMS),
                worker_env={**_llm_worker_env(llm_server), "AGENT_EVENT_LOOP": "shared"},
                broker_url=broker_url,
            )
        return
    yield from _stack(
        redis_db_url(redis_server.url, MAIN_DB),
        worker_env={**_llm_worker_env(llm_server), "AGENT_EVENT_LOOP": mode},
    )


@pytest.fixture(scope="session")
def raw_stack(redis_server: EmbeddedRedis, llm_server: LLMServerProcess) -> Iterator[Stack]:
    """Every chunk its own event (no coalescing), and a heartbeat twice a second."""
    yield from _stack(
        redis_db_url(redis_server.url, RAW_DB),
        worker_env={**_llm_worker_env(llm_server), "STREAM_COALESCE_WINDOW": "0"},
        web_env={"SSE_HEARTBEAT_SECONDS": "0.5"},
    )


@pytest.fixture(scope="session")
def bare_stack(redis_server: EmbeddedRedis) -> Iterator[Stack]:
    worker_env = {
        "LLM_BASE_URL": "",
        "ECHO_WORD_DELAY": "0.3",
        "CELERY_TASK_SOFT_TIME_LIMIT": "1",
    }
    yield from _stack(
        redis_db_url(redis_server.url, BARE_DB), worker_env=worker_env, pool="prefork"
    )


@dataclass
class OpsStack(Stack):
    metrics_url: str
    sentry: SentryReceiver


@pytest.fixture(scope="session")
def sentry() -> Iterator[SentryReceiver]:
    with SentryReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def ops_stack(
    redis_server: EmbeddedRedis, llm_server: LLMServerProcess, sentry: SentryReceiver
) -> Iterator[OpsStack]:
    port = free_port()
    watched = {"SENTRY_DSN": sentry.dsn, "LOG_FORMAT": "json"}
    worker_env = {
        **_llm_worker_env(llm_server),
        **watched,
        "WORKER_METRICS_PORT": str(port),
        "CELERY_TASK_MAX_RETRIES": "2",
    }
    for stack in _stack(
        redis_db_url(redis_server.url, OPS_DB), worker_env=worker_env, web_env=watched
    ):
        yield OpsStack(
            redis_url=stack.redis_url,
            web=stack.web,
            worker=stack.worker,
            metrics_url=f"http://127.0.0.1:{port}/metrics",
            sentry=sentry,
        )


@pytest.fixture(scope="session")
def idle_web(redis_server: EmbeddedRedis) -> Iterator[Stack]:
    yield from _stack(redis_db_url(redis_server.url, IDLE_DB), worker_env=None)


@pytest.fixture
def idle_redis(idle_web: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(idle_web.redis_url)
    try:
        yield client
    finally:
        client.close()


E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e runs real processes: ``-m "not e2e"`` leaves it out."""
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _fresh_llm_record(request: pytest.FixtureRequest) -> None:
    """Tests that script the LLM start with no scenarios and no recorded calls, so a test run
    once per loop mode counts only its own calls."""
    if "llm" in request.fixturenames:
        request.getfixturevalue("llm").reset()
