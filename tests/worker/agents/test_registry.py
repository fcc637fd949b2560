"""Building agents by id: unknown ids, missing LLM configuration, the catalogue in step, and
the loop's LLM session opened only by an agent that calls the LLM."""

import ssl
from collections.abc import AsyncIterator

import httpx
import pytest

from contract.agents import BUILTIN_AGENTS as AGENT_CATALOG
from worker.agents.echo import EchoAgent
from worker.agents.llm_session import LazyLLMSession
from worker.agents.registry import AGENT_FACTORIES, build_agent
from worker.agents.simple_llm import SimpleLLMAgent
from worker.errors import AgentConfigurationError, UnknownAgentError
from worker.settings import WorkerSettings

pytestmark = pytest.mark.anyio


def settings(**values: object) -> WorkerSettings:
    return WorkerSettings(_env_file=None, echo_word_delay=0, **values)  # type: ignore[arg-type]


def unreachable(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"building an agent must not call the LLM: {request.url}")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(unreachable)) as client:
        yield client


@pytest.fixture
async def llm() -> AsyncIterator[LazyLLMSession]:
    session = LazyLLMSession(tls=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    yield session
    await session.aclose()


async def test_build_agent_raises_unknown_agent_when_id_is_not_registered(
    http: httpx.AsyncClient,
    llm: LazyLLMSession,
) -> None:
    with pytest.raises(UnknownAgentError, match="no agent is registered under 'telepathy'"):
        build_agent("telepathy", settings=settings(), http=http, llm_session=llm)


async def test_build_agent_refuses_simple_llm_when_llm_base_url_is_unset(
    http: httpx.AsyncClient,
    llm: LazyLLMSession,
) -> None:
    with pytest.raises(AgentConfigurationError, match="LLM_BASE_URL"):
        build_agent(
            "simple_llm_agent", settings=settings(llm_base_url=None), http=http, llm_session=llm
        )


async def test_build_agent_refuses_simple_llm_when_llm_base_url_is_empty(
    http: httpx.AsyncClient,
    llm: LazyLLMSession,
) -> None:
    with pytest.raises(AgentConfigurationError, match="LLM_BASE_URL"):
        build_agent(
            "simple_llm_agent", settings=settings(llm_base_url=""), http=http, llm_session=llm
        )


async def test_build_agent_returns_simple_llm_when_llm_base_url_is_set(
    http: httpx.AsyncClient,
    llm: LazyLLMSession,
) -> None:
    agent = build_agent(
        "simple_llm_agent",
        settings=settings(llm_base_url="https://llm.test/v1", llm_api_key="sk-test"),
        http=http,
        llm_session=llm,
    )

    assert isinstance(agent, SimpleLLMAgent)
    assert llm.opened


async def test_build_agent_returns_echo_without_opening_llm_session_when_id_is_echo(
    http: httpx.AsyncClient, llm: LazyLLMSession
) -> None:
    agent = build_agent("echo", settings=settings(), http=http, llm_session=llm)

    assert isinstance(agent, EchoAgent)
    assert not llm.opened


def test_registry_ids_equal_catalog_ids() -> None:
    assert set(AGENT_FACTORIES) == set(AGENT_CATALOG)


@pytest.mark.parametrize("agent_id", sorted(AGENT_CATALOG))
async def test_build_agent_needs_llm_exactly_when_catalog_says_so(
    agent_id: str, http: httpx.AsyncClient, llm: LazyLLMSession
) -> None:
    without_llm = settings(llm_base_url=None)

    if AGENT_CATALOG[agent_id].needs_llm:
        with pytest.raises(AgentConfigurationError):
            build_agent(agent_id, settings=without_llm, http=http, llm_session=llm)
    else:
        assert build_agent(agent_id, settings=without_llm, http=http, llm_session=llm) is not None
