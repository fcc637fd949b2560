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
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from scripts.embedded_redis import EmbeddedRedis
from tests.support.llm_server import LLMServerProcess
from tests.support.processes import ManagedProcess
from tests.support.stack import WebServer, redis_db_url, start_web, start_worker

MAIN_DB, BARE_DB, IDLE_DB, RAW_DB = 0, 1, 2, 3


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
) -> Iterator[Stack]:
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
    }


LOOP_MODES = ["shared", "per-task"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    both = getattr(metafunc.module, "RUN_IN_BOTH_LOOP_MODES", False)
    if both and "stack" in metafunc.fixturenames:
        metafunc.parametrize("stack", LOOP_MODES, indirect=True, scope="session")


@pytest.fixture(scope="session")
def stack(
    request: pytest.FixtureRequest, redis_server: EmbeddedRedis, llm_server: LLMServerProcess
) -> Iterator[Stack]:
    mode = getattr(request, "param", "shared")
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
