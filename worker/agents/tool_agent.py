"""``tool_agent``: the LLM, calling tools between its turns until it answers.

Each turn streams one completion with every registered tool declared (``worker.agents.tools``).
When the model asks for tools, each call is reported on the stream (``tool_call``), its arguments
are parsed and checked against the tool's schema, the tool runs within ``TOOL_TIME_LIMIT``, its
result (or its error, which the model reads and may recover from) is reported (``tool_result``)
and goes back to the model as a ``tool`` turn. The model's text, from any turn, streams to the
user as it comes; the answer is all of it. Each turn is a stage (``thinking``, then ``calling
<tool>``) with a progress that rises with the turns.

Bounds: at most ``TOOL_AGENT_MAX_TURNS`` model turns, and a tool that outlives its time limit
ends the task with ``ToolTimeoutError`` (a tool that hangs would otherwise hold the task to its
own limit). A cancel reaches a running tool like everything else: the task's scope cancels it.
"""

import json
from collections.abc import Mapping
from typing import Any

import anyio
import orjson

from worker.agents.base import (
    AgentReply,
    AgentRequest,
    ChatMessage,
    ChunkSink,
    StepReporter,
    ToolCall,
)
from worker.agents.openai_client import OpenAICompatibleClient
from worker.agents.tools import Tool, ToolArgumentsError
from worker.errors import PermanentAgentError

#: Longest part of a tool's result shown on the stream as its summary (the model gets it whole).
SUMMARY_CHARS = 200
#: Longest tool result given back to the model (characters).
MAX_RESULT_CHARS = 20_000


class ToolTurnLimitError(PermanentAgentError):
    """The model kept calling tools past the turn bound without answering."""


class ToolTimeoutError(PermanentAgentError):
    """A tool did not return within its time limit."""


def _parsed_arguments(text: str) -> Any:
    """The model's arguments as JSON the stream can carry, else its text as written (which the
    tool's check then refuses, so the model reads why). Python's parser accepts what no encoder
    on the stream's way does: a lone surrogate (``"\\ud800"``), an integer past 64 bits, nesting
    past orjson's limit (or its own stack)."""
    try:
        arguments = json.loads(text or "{}")
        orjson.dumps({"tool_call": {"arguments": arguments}})  # as deep as the event's data
    except (ValueError, TypeError, RecursionError):  # orjson.JSONEncodeError is a TypeError
        return text
    return arguments


class ToolCallingAgent:
    def __init__(
        self,
        client: OpenAICompatibleClient,
        tools: Mapping[str, Tool],
        *,
        max_turns: int,
        tool_time_limit: float,
        system_prompt: str | None = None,
    ) -> None:
        self._client = client
        self._tools = dict(tools)
        self._declarations = [tool.declaration() for tool in self._tools.values()]
        self._max_turns = max_turns
        self._tool_time_limit = tool_time_limit
        self._system_prompt = system_prompt

    async def run(
        self, request: AgentRequest, *, on_chunk: ChunkSink, steps: StepReporter
    ) -> AgentReply:
        messages: list[ChatMessage] = []
        if self._system_prompt:
            messages.append(ChatMessage(role="system", content=self._system_prompt))
        messages.extend(request.history)
        messages.append(ChatMessage(role="user", content=request.message))
        texts: list[str] = []
        usage: dict[str, int] = {}
        calls_made = 0
        for turn in range(1, self._max_turns + 1):
            await steps.stage("thinking", progress=self._progress(turn), detail=f"turn {turn}")
            completion = await self._client.stream_chat(
                messages, on_chunk=on_chunk, tools=self._declarations
            )
            texts.append(completion.content)
            for name, count in completion.usage.items():
                usage[name] = usage.get(name, 0) + count
            if not completion.tool_calls:
                return AgentReply(
                    content="".join(texts),
                    usage=usage,
                    metadata={
                        "model": completion.model,
                        "finish_reason": completion.finish_reason,
                        "turns": turn,
                        "tool_calls": calls_made,
                    },
                )
            calls = tuple(completion.tool_calls)
            messages.append(
                ChatMessage(role="assistant", content=completion.content, tool_calls=calls)
            )
            for call in calls:
                calls_made += 1
                # A name the model made up is not repeated (stages reach Flower and logs).
                shown = call.name if call.name in self._tools else "an unknown tool"
                await steps.stage(f"calling {shown}", progress=self._progress(turn))
                result = await self._call(call, steps)
                messages.append(ChatMessage(role="tool", content=result, tool_call_id=call.id))
        raise ToolTurnLimitError(
            f"the model did not answer within {self._max_turns} turns (TOOL_AGENT_MAX_TURNS)"
        )

    def _progress(self, turn: int) -> int:
        """From 10 at the first turn towards 90 at the last."""
        return 10 + (80 * (turn - 1)) // self._max_turns

    async def _call(self, call: ToolCall, steps: StepReporter) -> str:
        """Run one call; its result as the model reads it (an error is a result too)."""
        arguments = _parsed_arguments(call.arguments)
        await steps.tool_call(call.id, call.name, arguments)
        tool = self._tools.get(call.name)
        if tool is None:
            return await self._failed(call, steps, f"there is no tool named {call.name!r}")
        try:
            checked = tool.validate(arguments)
        except ToolArgumentsError as exc:
            return await self._failed(call, steps, f"invalid arguments: {exc}")
        # Our limit is told from a TimeoutError the tool raises itself (its own HTTP client's
        # timeout, say): that one is an error result the model reads, like any other.
        value: Any = None
        try:
            with anyio.move_on_after(self._tool_time_limit) as limit:
                value = await tool.function(**checked)
        except Exception as exc:  # the model reads the error and may try otherwise
            return await self._failed(call, steps, f"{type(exc).__name__}: {exc}")
        if limit.cancelled_caught:
            raise ToolTimeoutError(
                f"tool {call.name!r} did not return within {self._tool_time_limit:g} s "
                "(TOOL_TIME_LIMIT)"
            )
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        text = text[:MAX_RESULT_CHARS]
        await steps.tool_result(call.id, ok=True, summary=text[:SUMMARY_CHARS])
        return text

    async def _failed(self, call: ToolCall, steps: StepReporter, error: str) -> str:
        await steps.tool_result(call.id, ok=False, summary=error[:SUMMARY_CHARS])
        return f"error: {error}"
