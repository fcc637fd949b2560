"""One agent invocation, from request to result, without Celery.

This is the task's logic as plain async code: build the agent on the loop's clients, run it,
count its chunks into progress, and shape the result every client sees
(``{"content", "metadata", "usage"}``). The Celery task around it adds retries, limits and state;
tests can drive this directly.
"""

import time
from collections.abc import Mapping
from typing import Any

import httpx

from contract.events import EventType
from worker.agents.base import AgentReply, AgentRequest, ChunkSink
from worker.agents.llm_session import LazyLLMSession
from worker.agents.progress import STARTING, ProgressReport, ProgressTracker
from worker.agents.registry import build_agent
from worker.agents.steps import AgentSteps, QueueEvent, takes_steps
from worker.errors import PermanentAgentError
from worker.settings import WorkerSettings

#: A bound on what a foreign producer may put in a task (the web API enforces tighter limits).
MAX_TASK_MESSAGE_CHARS = 1_000_000


class InvalidInvocationError(PermanentAgentError):
    """The task's arguments are not a valid invocation."""


def parse_request(
    *,
    agent_id: object,
    message: object,
    user_id: object,
    session_id: object = None,
    metadata: object = None,
) -> AgentRequest:
    """Check a task's kwargs (any Celery producer may send them) and build the request."""
    if not isinstance(agent_id, str) or not agent_id:
        raise InvalidInvocationError("agent_id must be a non-empty string")
    if not isinstance(message, str) or not message.strip():
        raise InvalidInvocationError("message must be a non-empty string")
    if "\x00" in message:
        raise InvalidInvocationError("message must not contain NUL characters")
    if len(message) > MAX_TASK_MESSAGE_CHARS:
        raise InvalidInvocationError(f"message is longer than {MAX_TASK_MESSAGE_CHARS} characters")
    if not isinstance(user_id, str) or not user_id:
        raise InvalidInvocationError("user_id must be a non-empty string")
    if session_id is not None and not isinstance(session_id, str):
        raise InvalidInvocationError("session_id must be a string or null")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidInvocationError("metadata must be an object or null")
    return AgentRequest(
        agent_id=agent_id,
        message=message,
        user_id=user_id,
        session_id=session_id,
        metadata=dict(metadata or {}),
    )


async def invoke_agent(
    request: AgentRequest,
    *,
    settings: WorkerSettings,
    http: httpx.AsyncClient,
    llm_session: LazyLLMSession,
    report_progress: ProgressReport,
    attempt: int,
    streamed: bool,
    on_chunk: ChunkSink | None = None,
    on_step: QueueEvent | None = None,
) -> dict[str, Any]:
    """Run the agent and return the task's result; each chunk also goes to ``on_chunk``, and
    the tool events of an agent that reports steps to ``on_step``.

    The run is at the ``starting`` stage already (its claim reported it)."""
    started = time.monotonic()
    progress = ProgressTracker(
        report_progress,
        min_interval=settings.progress_min_interval,
        stage="starting",
        progress=STARTING,
    )
    chunks = 0

    async def count_chunk(text: str) -> None:
        nonlocal chunks
        chunks += 1
        if on_chunk is not None:
            await on_chunk(text)
        await progress.chunks(chunks)

    agent = build_agent(request.agent_id, settings=settings, http=http, llm_session=llm_session)
    if takes_steps(type(agent).run):
        steps = AgentSteps(on_step or _ignore_step, progress=progress)
        reply = await agent.run(request, on_chunk=count_chunk, steps=steps)  # type: ignore[call-arg]
    else:
        reply = await agent.run(request, on_chunk=count_chunk)
    return task_result(
        request,
        reply,
        chunks=chunks,
        attempt=attempt,
        streamed=streamed,
        duration_ms=round((time.monotonic() - started) * 1000),
    )


async def _ignore_step(kind: EventType, payload: dict[str, Any]) -> None:
    pass


def task_result(
    request: AgentRequest,
    reply: AgentReply,
    *,
    chunks: int,
    attempt: int,
    streamed: bool,
    duration_ms: int,
) -> dict[str, Any]:
    """The result every client sees: ``{"content", "metadata", "usage"}``."""
    metadata: dict[str, Any] = {
        **reply.metadata,
        "agent_id": request.agent_id,
        "session_id": request.session_id,
        "chunks": chunks,
        "attempt": attempt,
        "streamed": streamed,
        "duration_ms": duration_ms,
    }
    if request.metadata:
        metadata["request"] = dict(request.metadata)
    return {"content": reply.content, "metadata": metadata, "usage": reply.usage}
