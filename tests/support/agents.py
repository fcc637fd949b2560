"""Agents the tests add through ``AGENT_MODULES=tests.support.agents``, as a user adds theirs."""

import time
from typing import Any

import anyio

from contract.agents import AgentSpec
from worker.agents.base import AgentReply, AgentRequest, ChunkSink
from worker.agents.plugins import AgentPlugin
from worker.agents.tools import Tool

#: How long ``blocking_agent`` holds the event loop.
BLOCK_SECONDS = 0.4


class BlockingAgent:
    """Makes a synchronous call inside the event loop: the mistake the loop monitor reports."""

    async def run(self, request: AgentRequest, *, on_chunk: ChunkSink) -> AgentReply:
        time.sleep(BLOCK_SECONDS)
        await on_chunk("unblocked")
        return AgentReply(content="unblocked")


class ShoutingAgent:
    async def run(self, request: AgentRequest, *, on_chunk: ChunkSink) -> AgentReply:
        await on_chunk(request.message.upper())
        return AgentReply(content=request.message.upper())


class UnstorableAgent:
    """Answers with what JSON cannot carry: a lone surrogate."""

    async def run(self, request: AgentRequest, *, on_chunk: ChunkSink) -> AgentReply:
        return AgentReply(content="half a character: \ud800")


def _blocking(settings: Any, http: Any) -> BlockingAgent:
    return BlockingAgent()


def _shouting(settings: Any, http: Any) -> ShoutingAgent:
    return ShoutingAgent()


AGENTS = [
    AgentPlugin(AgentSpec("blocking_agent", "Blocks its event loop.", needs_llm=False), _blocking),
    AgentPlugin(AgentSpec("shouting_agent", "Answers in capitals.", needs_llm=False), _shouting),
    AgentPlugin(
        AgentSpec("unstorable_agent", "Answers what JSON cannot carry.", needs_llm=False),
        lambda settings, http: UnstorableAgent(),
    ),
]


CAPITALS = {"france": "Paris", "japan": "Tokyo"}


async def _lookup_capital(country: str) -> str:
    """A tool as a plugin adds one; it fails for a country it does not know."""
    try:
        return CAPITALS[country.lower()]
    except KeyError:
        raise LookupError(f"no capital known for {country!r}") from None


async def _fetch_upstream() -> str:
    """A tool whose own client gives up: its TimeoutError is the tool's error, not the limit's."""
    raise TimeoutError("upstream did not answer")


async def _pause(seconds: float) -> str:
    """A tool that takes its time: for time limits and cancels."""
    await anyio.sleep(seconds)
    return f"paused {seconds:g} s"


TOOLS = [
    Tool(
        name="lookup_capital",
        description="The capital city of a country.",
        parameters={
            "type": "object",
            "properties": {"country": {"type": "string"}},
            "required": ["country"],
        },
        function=_lookup_capital,
    ),
    Tool(
        name="fetch_upstream",
        description="Fetches from a service that times out.",
        parameters={"type": "object", "properties": {}},
        function=_fetch_upstream,
    ),
    Tool(
        name="pause",
        description="Waits a number of seconds.",
        parameters={
            "type": "object",
            "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 60}},
            "required": ["seconds"],
        },
        function=_pause,
    ),
]
