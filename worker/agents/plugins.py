"""Agents of your own, added by module name: ``AGENT_MODULES=myproject.agents,other.agents``.

Each module lists its agents in ``AGENTS``, a sequence of ``AgentPlugin`` (what clients see, and
how the worker builds it). The worker builds them like the built-in ones, on the loop that runs
the task, and publishes their specs to Redis when it starts, where the web process finds them for
``GET /api/v1/agents`` and to accept invocations of them (the web never imports these modules)::

    # myproject/agents.py
    from contract.agents import AgentSpec
    from worker.agents.plugins import AgentPlugin

    AGENTS = [AgentPlugin(AgentSpec("summariser", "Summarises text.", needs_llm=True), build)]

Loading fails loudly at start-up: a module that does not import, has no ``AGENTS``, or reuses an
id is a configuration error naming the module, not an agent that silently goes missing.
"""

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from contract.agents import BUILTIN_AGENTS, AgentSpec

if TYPE_CHECKING:
    import httpx

    from worker.agents.base import Agent
    from worker.settings import WorkerSettings

    AgentFactory = Callable[[WorkerSettings, httpx.AsyncClient], Agent]
else:
    AgentFactory = Callable[..., object]


class AgentModuleError(RuntimeError):
    """An ``AGENT_MODULES`` entry could not be loaded; the message names it."""


@dataclass(frozen=True, slots=True)
class AgentPlugin:
    spec: AgentSpec
    factory: AgentFactory


def module_names(setting: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in setting.split(",") if name.strip())


@lru_cache
def load_agent_modules(names: tuple[str, ...]) -> dict[str, AgentPlugin]:
    """The agents of the named modules, by id; their ids must not clash with any other."""
    plugins: dict[str, AgentPlugin] = {}
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # not only ImportError: whatever the module raises as it runs
            raise AgentModuleError(
                f"AGENT_MODULES: cannot import {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        agents = getattr(module, "AGENTS", None)
        if not isinstance(agents, Sequence) or not all(
            isinstance(agent, AgentPlugin) for agent in agents
        ):
            raise AgentModuleError(
                f"AGENT_MODULES: {name!r} must define AGENTS, a list of AgentPlugin"
            )
        for agent in agents:
            agent_id = agent.spec.id
            if agent_id in BUILTIN_AGENTS or agent_id in plugins:
                raise AgentModuleError(
                    f"AGENT_MODULES: {name!r} registers agent {agent_id!r}, which already exists"
                )
            plugins[agent_id] = agent
    return plugins


def plugin_specs(setting: str) -> list[AgentSpec]:
    """The specs of the agents ``AGENT_MODULES`` adds, as the worker publishes them."""
    return [plugin.spec for plugin in load_agent_modules(module_names(setting)).values()]
