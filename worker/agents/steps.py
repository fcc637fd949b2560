"""The steps an agent reports (``StepReporter``), as events on its task's stream.

A stage becomes a ``progress`` event that carries the stage's name, its progress and an optional
detail; a tool call and its result become ``tool_call`` and ``tool_result`` events. They are
queued after the chunks before them and written with the next batch, coalesced like chunks.
Once an agent reports a stage, its stages and progress are what polling shows; counting chunks
(the fallback for agents that only stream text) no longer moves them (``ProgressTracker``).
"""

import inspect
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

from contract.events import EventType
from worker.agents.progress import ProgressTracker

#: Longest tool summary, stage detail and names kept on the stream (characters).
MAX_SUMMARY = 500
MAX_DETAIL = 500
MAX_NAME = 100

#: Queues one event on the task's stream (it goes with the next batch).
QueueEvent = Callable[[EventType, dict[str, Any]], Awaitable[None]]


class AgentSteps:
    """A ``StepReporter`` for one attempt."""

    def __init__(self, queue: QueueEvent, *, progress: ProgressTracker) -> None:
        self._queue = queue
        self._progress = progress

    async def stage(
        self, name: str, *, progress: int | None = None, detail: str | None = None
    ) -> None:
        await self._progress.agent_stage(
            str(name)[:MAX_NAME],
            progress=None if progress is None else int(progress),
            detail=str(detail)[:MAX_DETAIL] if detail else None,
        )

    async def tool_call(self, call_id: str, name: str, arguments: object) -> None:
        payload = {"id": str(call_id), "name": str(name)[:MAX_NAME], "arguments": arguments}
        await self._queue(EventType.TOOL_CALL, payload)

    async def tool_result(self, call_id: str, *, ok: bool, summary: str = "") -> None:
        payload = {"id": str(call_id), "ok": bool(ok), "summary": str(summary)[:MAX_SUMMARY]}
        await self._queue(EventType.TOOL_RESULT, payload)


@lru_cache(maxsize=256)
def takes_steps(run: Callable[..., Any]) -> bool:
    """Does this ``run`` declare a ``steps`` parameter (so it gets a ``StepReporter``)?"""
    try:
        parameters = inspect.signature(run).parameters
    except (TypeError, ValueError):
        return False
    return "steps" in parameters
