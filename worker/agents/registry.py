"""Builds the agent for an id, bound to the resources of the event loop that will run it.

The ids are those of ``contract.agents.BUILTIN_AGENTS``, and of the modules named by
``AGENT_MODULES`` (``plugins``); an agent that needs an LLM refuses to be built without one (a
clear configuration error, never a made-up answer). Plugin factories get the settings and the
loop's ``httpx.AsyncClient``; the built-in ones get the settings and the loop's LLM session
(``LazyLLMSession``), which only an agent that calls the LLM opens.
"""

from collections.abc import Callable

import httpx

from contract.agents import BUILTIN_AGENTS
from worker.agents.base import Agent
from worker.agents.echo import EchoAgent
from worker.agents.llm_session import LazyLLMSession
from worker.agents.openai_client import OpenAICompatibleClient
from worker.agents.plugins import load_agent_modules, module_names
from worker.agents.simple_llm import SimpleLLMAgent
from worker.errors import AgentConfigurationError, UnknownAgentError
from worker.settings import WorkerSettings

BuiltinAgentFactory = Callable[[WorkerSettings, LazyLLMSession], Agent]


def _echo(settings: WorkerSettings, llm_session: LazyLLMSession) -> Agent:
    return EchoAgent(word_delay=settings.echo_word_delay)


def _simple_llm(settings: WorkerSettings, llm_session: LazyLLMSession) -> Agent:
    if not settings.llm_base_url:
        raise AgentConfigurationError(
            "simple_llm_agent needs an OpenAI-compatible LLM: set LLM_BASE_URL "
            "(and LLM_API_KEY, LLM_MODEL) in the worker's environment"
        )
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    client = OpenAICompatibleClient(
        llm_session.get(),
        base_url=settings.llm_base_url,
        api_key=api_key,
        model=settings.llm_model,
        connect_timeout=settings.llm_connect_timeout,
        read_timeout=settings.llm_read_timeout,
    )
    return SimpleLLMAgent(client)


AGENT_FACTORIES: dict[str, BuiltinAgentFactory] = {
    "echo": _echo,
    "simple_llm_agent": _simple_llm,
}


def build_agent(
    agent_id: str,
    *,
    settings: WorkerSettings,
    http: httpx.AsyncClient,
    llm_session: LazyLLMSession,
) -> Agent:
    """The agent registered under ``agent_id``, ready to run in the current loop."""
    builtin = AGENT_FACTORIES.get(agent_id) if agent_id in BUILTIN_AGENTS else None
    if builtin is not None:
        return builtin(settings, llm_session)
    plugin = load_agent_modules(module_names(settings.agent_modules)).get(agent_id)
    if plugin is None:
        raise UnknownAgentError(f"no agent is registered under {agent_id!r}")
    return plugin.factory(settings, http)
