"""The shape every agent has: a request in, chunks out as they come, one reply at the end.

Agents know nothing of Celery or Redis: the invocation hands them a ``ChunkSink`` and they await it
for every piece of text, so the same agent serves polling, streaming and tests.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """One invocation, as the task received it."""

    agent_id: str
    message: str
    user_id: str
    session_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    history: Sequence[ChatMessage] = ()


@dataclass(slots=True)
class AgentReply:
    """What an agent returns once its stream has ended."""

    content: str
    usage: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


class ChunkSink(Protocol):
    """Receives each piece of generated text, in order, as soon as the agent has it."""

    async def __call__(self, text: str, /) -> None: ...


class StepReporter(Protocol):
    """What an agent tells its users besides text: the stage it is at, and the tools it calls.

    Each report becomes an event on the task's stream (``progress`` with the stage, ``tool_call``,
    ``tool_result``), and a stage's progress is what polling shows from then on. Progress never
    goes back within an attempt (a lower value keeps the higher one). Tool arguments and results
    go to the task's own stream, never to a log.
    """

    async def stage(
        self, name: str, *, progress: int | None = None, detail: str | None = None
    ) -> None: ...

    async def tool_call(self, call_id: str, name: str, arguments: object) -> None: ...

    async def tool_result(self, call_id: str, *, ok: bool, summary: str = "") -> None: ...


class Agent(Protocol):
    """An agent. One that also declares a keyword-only ``steps`` parameter in ``run`` gets a
    ``StepReporter`` there; one that does not runs as it always did."""

    async def run(self, request: AgentRequest, *, on_chunk: ChunkSink) -> AgentReply: ...
