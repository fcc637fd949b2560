"""The shape every agent has: a request in, chunks out as they come, one reply at the end.

Agents know nothing of Celery or Redis: the invocation hands them a ``ChunkSink`` and they await it
for every piece of text, so the same agent serves polling, streaming and tests.

``ChatMessage`` is one turn of a conversation as OpenAI-compatible chat APIs take it, tool calls
included: an ``assistant`` turn may carry the ``tool_calls`` the model asked for, and each result
goes back as a ``tool`` turn naming the call it answers (``tool_call_id``).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function the model asked to call: ``arguments`` is its JSON text, as the model wrote it
    (not parsed here: the tool decides what to do with arguments that are not valid JSON)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    #: On an ``assistant`` turn: the calls it asked for (its ``content`` may then be empty).
    tool_calls: tuple[ToolCall, ...] = ()
    #: On a ``tool`` turn: the id of the call whose result ``content`` is.
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message carries tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message, and only a tool message, names its tool_call_id")


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
