"""The two agent tasks, under the dotted names that existing Celery producers send.

Each is a thin shell around ``worker.invocation``: it parses the kwargs, runs the invocation on an
anyio loop with the task's soft limit enforced inside the loop, reports progress as state
``PROGRESS``, and retries transient LLM failures with exponential backoff (honouring
``Retry-After``). Permanent failures and the last transient one fail the task with the error's
class name and message, which polling shows.
"""

from functools import partial
from typing import Any

from celery import Task

from worker.celery_app import celery_app
from worker.errors import TransientAgentError
from worker.invocation import invoke_agent, parse_request
from worker.retry_policy import retry_countdown
from worker.runtime import run_with_time_limit
from worker.settings import INVOKE_TIME_LIMIT, STREAMING_TIME_LIMIT, get_settings

INVOKE_AGENT_ASYNC = "agent_service.workers.tasks.agent_tasks.invoke_agent_async"
INVOKE_AGENT_WITH_STREAMING = "agent_service.workers.tasks.agent_tasks.invoke_agent_with_streaming"

_settings = get_settings()
_INVOKE_SOFT, _INVOKE_HARD = _settings.time_limits(INVOKE_TIME_LIMIT)
_STREAMING_SOFT, _STREAMING_HARD = _settings.time_limits(STREAMING_TIME_LIMIT)


def _run(
    task: Task,  # type: ignore[type-arg]
    *,
    soft_limit: float,
    streamed: bool,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    settings = get_settings()
    request = parse_request(**kwargs)
    task_id = task.request.id
    retries = task.request.retries

    async def report_progress(progress: int, stage: str) -> None:
        # A direct call on purpose: the loop runs in this task's own pool thread, so the write
        # blocks no other task, and it reuses the thread's result-backend connection. Handing it
        # to a helper thread would build a new backend (and connection pool) per helper thread:
        # Celery keeps backends thread-local.
        task.update_state(  # noqa: ASYNC
            task_id=task_id, state="PROGRESS", meta={"progress": progress, "stage": stage}
        )

    call = partial(
        invoke_agent,
        request,
        settings=settings,
        report_progress=report_progress,
        attempt=retries + 1,
        streamed=streamed,
    )
    try:
        return run_with_time_limit(call, time_limit=soft_limit)
    except TransientAgentError as exc:
        countdown = retry_countdown(
            retries,
            base=settings.celery_task_default_retry_delay,
            maximum=settings.celery_task_retry_backoff_max,
            retry_after=exc.retry_after,
        )
        # Past max_retries Celery re-raises ``exc`` itself: the task fails with the last error.
        raise task.retry(exc=exc, countdown=countdown) from exc


@celery_app.task(
    bind=True,
    name=INVOKE_AGENT_ASYNC,
    rate_limit=_settings.agent_task_rate_limit or None,
    time_limit=_INVOKE_HARD,
    max_retries=_settings.celery_task_max_retries,
    acks_late=True,
    reject_on_worker_lost=True,
)
def invoke_agent_async(
    self: Task,  # type: ignore[type-arg]
    agent_id: str,
    message: str,
    user_id: str,
    session_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run an agent to completion; the answer is available by polling."""
    kwargs = {
        "agent_id": agent_id,
        "message": message,
        "user_id": user_id,
        "session_id": session_id,
        "metadata": metadata,
    }
    return _run(self, soft_limit=_INVOKE_SOFT, streamed=False, kwargs=kwargs)


@celery_app.task(
    bind=True,
    name=INVOKE_AGENT_WITH_STREAMING,
    rate_limit=_settings.streaming_task_rate_limit or None,
    time_limit=_STREAMING_HARD,
    max_retries=_settings.celery_task_max_retries,
    acks_late=True,
    reject_on_worker_lost=True,
)
def invoke_agent_with_streaming(
    self: Task,  # type: ignore[type-arg]
    agent_id: str,
    message: str,
    user_id: str,
    session_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run an agent whose chunks are relayed to clients as they are generated."""
    kwargs = {
        "agent_id": agent_id,
        "message": message,
        "user_id": user_id,
        "session_id": session_id,
        "metadata": metadata,
    }
    return _run(self, soft_limit=_STREAMING_SOFT, streamed=True, kwargs=kwargs)
