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


class Agent(Protocol):
    async def run(self, request: AgentRequest, *, on_chunk: ChunkSink) -> AgentReply: ...
