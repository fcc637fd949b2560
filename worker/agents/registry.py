"""Builds the agent for an id, bound to the resources of the event loop that will run it.

The ids are those of ``contract.agents.BUILTIN_AGENTS``, and of the modules named by
``AGENT_MODULES`` (``plugins``); an agent that needs an LLM refuses to be built without one (a
clear configuration error, never a made-up answer).
"""

from collections.abc import Callable

import httpx

from contract.agents import BUILTIN_AGENTS
from worker.agents.base import Agent
from worker.agents.echo import EchoAgent
from worker.agents.openai_client import OpenAICompatibleClient
from worker.agents.plugins import load_agent_modules, module_names
from worker.agents.simple_llm import SimpleLLMAgent
from worker.errors import AgentConfigurationError, UnknownAgentError
from worker.settings import WorkerSettings

AgentFactory = Callable[[WorkerSettings, httpx.AsyncClient], Agent]


def _echo(settings: WorkerSettings, http: httpx.AsyncClient) -> Agent:
    return EchoAgent(word_delay=settings.echo_word_delay)


def _simple_llm(settings: WorkerSettings, http: httpx.AsyncClient) -> Agent:
    if not settings.llm_base_url:
        raise AgentConfigurationError(
            "simple_llm_agent needs an OpenAI-compatible LLM: set LLM_BASE_URL "
            "(and LLM_API_KEY, LLM_MODEL) in the worker's environment"
        )
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    client = OpenAICompatibleClient(
        http, base_url=settings.llm_base_url, api_key=api_key, model=settings.llm_model
    )
    return SimpleLLMAgent(client)


AGENT_FACTORIES: dict[str, AgentFactory] = {
    "echo": _echo,
    "simple_llm_agent": _simple_llm,
}


def build_agent(agent_id: str, *, settings: WorkerSettings, http: httpx.AsyncClient) -> Agent:
    """The agent registered under ``agent_id``, ready to run in the current loop."""
    factory = AGENT_FACTORIES.get(agent_id) if agent_id in BUILTIN_AGENTS else None
    if factory is None:
        plugin = load_agent_modules(module_names(settings.agent_modules)).get(agent_id)
        factory = plugin.factory if plugin is not None else None
    if factory is None:
        raise UnknownAgentError(f"no agent is registered under {agent_id!r}")
    return factory(settings, http)
