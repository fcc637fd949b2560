"""The two agent tasks, under the dotted names that existing Celery producers send.

Each is a thin shell around ``worker.invocation``: it parses the kwargs, runs the invocation on the
process's runtime (``worker.runtime``: a loop per task or one shared loop) with the task's soft
limit enforced inside the loop, and retries transient LLM failures
with exponential backoff (honouring ``Retry-After``). Permanent failures and the last transient
one fail the task with the error's class name and message, which polling shows.

With a ``session_id``, the agent receives the session's earlier turns, and the task appends its
question and answer to the session once it has the answer (``worker.session_memory``).

Everything the call does is also published to the task's event log, in order: ``reset`` when a
retry starts, ``status`` running, ``progress`` (also set as Celery state ``PROGRESS``), every
``chunk``. The terminal event (``result`` or ``error``) and the ``retrying`` status are published
by ``AgentTask``'s hooks, which Celery calls after it has stored the state: a client that reads the
terminal event from the stream and then polls sees the same outcome. The hooks also write the
task's audit row (completed, failed, cancelled).
"""

import dataclasses
import logging
from functools import partial
from typing import Any

import anyio
from celery import Task, states
from celery.exceptions import Ignore

from storage.audit import AuditAction, AuditOutcome
from streaming.cancellation import cancel_requested
from streaming.events import EventType
from streaming.publisher import TaskEventPublisher
from worker.audit_trail import record_task_outcome
from worker.base_task import BaseTask
from worker.celery_app import celery_app
from worker.control import cancel_on_request
from worker.errors import AgentTimeoutError, TaskCancelledError, TransientAgentError
from worker.invocation import invoke_agent, parse_request
from worker.logs import log_event
from worker.recovery import DuplicateRunError, claim_run, release_run
from worker.retry_policy import retry_countdown
from worker.runtime import LoopResources, get_runtime
from worker.session_memory import load_history, remember_exchange
from worker.settings import INVOKE_TIME_LIMIT, STREAMING_TIME_LIMIT, get_settings
from worker.stream_events import (
    error_payload,
    publish_from_hook,
    publish_stored_outcome,
    stored_state,
)
from worker.task_state import CeleryStateWriter, RedisBackendStateWriter, StateWriter

INVOKE_AGENT_ASYNC = "agent_service.workers.tasks.agent_tasks.invoke_agent_async"
INVOKE_AGENT_WITH_STREAMING = "agent_service.workers.tasks.agent_tasks.invoke_agent_with_streaming"

logger = logging.getLogger("agent_service.tasks")
_settings = get_settings()
_INVOKE_SOFT, _INVOKE_HARD = _settings.time_limits(INVOKE_TIME_LIMIT)
_STREAMING_SOFT, _STREAMING_HARD = _settings.time_limits(STREAMING_TIME_LIMIT)


class AgentTask(BaseTask):
    """Publishes each outcome to the task's stream once Celery has stored it, then audits it."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        super().on_success(retval, task_id, args, kwargs)
        settings = get_settings()
        publish_from_hook(settings, task_id, [(EventType.RESULT, retval)])
        record_task_outcome(
            settings,
            AuditAction.TASK_COMPLETE,
            task_id=task_id,
            task_kwargs=kwargs,
            outcome=AuditOutcome.SUCCESS,
        )

    def on_retry(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        super().on_retry(exc, task_id, args, kwargs, einfo)
        status = {"status": "retrying", "error": error_payload(exc)}
        publish_from_hook(get_settings(), task_id, [(EventType.STATUS, status)])

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        super().on_failure(exc, task_id, args, kwargs, einfo)
        settings = get_settings()
        publish_from_hook(settings, task_id, [(EventType.ERROR, error_payload(exc))])
        record_task_outcome(
            settings,
            AuditAction.TASK_FAIL,
            task_id=task_id,
            task_kwargs=kwargs,
            outcome=AuditOutcome.FAILURE,
            details={"error": type(exc).__name__, "message": str(exc)[:500]},
        )


def _run(
    task: Task,  # type: ignore[type-arg]
    *,
    soft_limit: float,
    streamed: bool,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    settings = get_settings()
    task_id = str(task.request.id)
    _skip_if_already_ended(task, task_id)
    request = parse_request(**kwargs)
    retries: int = task.request.retries
    worker_name = str(task.request.hostname)
    publishers: list[TaskEventPublisher] = []

    def content_so_far() -> str:
        return publishers[0].content if publishers else ""

    async def call(loop: LoopResources) -> dict[str, Any]:
        attempt = await claim_run(loop.redis, task_id, worker_name=worker_name)
        try:
            return await run(loop, attempt)
        finally:
            with anyio.CancelScope(shield=True):
                await release_run(loop.redis, task_id, worker_name=worker_name)

    async def run(loop: LoopResources, attempt: int) -> dict[str, Any]:
        async with TaskEventPublisher(loop.events, task_id) as publisher:
            publishers.append(publisher)

            state = _state_writer(task, task_id, loop, publisher)

            async def report_progress(progress: int, stage: str) -> None:
                meta = {"progress": progress, "stage": stage}
                await state.progress(meta)  # written with the event, in the same round trip
                await publisher.publish(EventType.PROGRESS, meta)

            scope = anyio.CancelScope()
            with cancel_on_request(settings, task_id, scope):
                if await cancel_requested(loop.redis, task_id):
                    raise TaskCancelledError("cancelled before it started")
                if attempt > 1:  # a retry, or a redelivery after a worker died mid-task
                    await publisher.publish(EventType.RESET, {"attempt": attempt, "content": ""})
                await publisher.publish(EventType.STATUS, {"status": "running", "attempt": attempt})
                with scope:
                    history = await load_history(
                        loop.database,  # opened only if the task names a session
                        request,
                        task_id=task_id,
                        limit=settings.session_history_messages,
                    )
                    result = await invoke_agent(
                        dataclasses.replace(request, history=history),
                        settings=settings,
                        http=loop.http,
                        report_progress=report_progress,
                        attempt=attempt,
                        streamed=streamed,
                        on_chunk=publisher.chunk,
                    )
                if scope.cancelled_caught:
                    raise TaskCancelledError("cancelled while running")
                await remember_exchange(
                    loop.database, request, task_id=task_id, answer=result["content"]
                )
                return result

    try:
        return get_runtime(settings).run(call, time_limit=soft_limit, task_id=task_id)
    except DuplicateRunError as exc:
        log_event(logger, logging.WARNING, "delivery_skipped", task_id=task_id, reason=str(exc))
        raise Ignore() from None
    except TaskCancelledError:
        _end_cancelled(task, task_id, content=content_so_far())
        raise Ignore() from None
    except AgentTimeoutError as exc:
        exc.details = {"reason": "timeout", "content": content_so_far()}
        raise
    except TransientAgentError as exc:
        countdown = retry_countdown(
            retries,
            base=settings.celery_task_default_retry_delay,
            maximum=settings.celery_task_retry_backoff_max,
            retry_after=exc.retry_after,
        )
        # Past max_retries Celery re-raises ``exc`` itself: the task fails with the last error.
        raise task.retry(exc=exc, countdown=countdown) from exc


def _state_writer(
    task: Task,  # type: ignore[type-arg]
    task_id: str,
    loop: LoopResources,
    publisher: TaskEventPublisher,
) -> StateWriter:
    """Write PROGRESS on the loop's Redis client when that is the result backend."""
    settings = get_settings()
    if (
        settings.result_backend_url == settings.redis_url_normalised
        and type(task.backend).__name__ == "RedisBackend"
    ):
        return RedisBackendStateWriter(publisher, task_id, expires=settings.celery_result_expires)
    return CeleryStateWriter(partial(task.update_state, task_id=task_id), loop.offload)


def _skip_if_already_ended(task: Task, task_id: str) -> None:  # type: ignore[type-arg]
    """Ignore a delivery of a task whose outcome Celery already stored (an ack lost with a
    connection, or a worker that died right after storing it), making sure its stream got the
    terminal event. The event log's own check (``claim_run``) misses the second case."""
    try:
        stored = stored_state(get_settings(), task_id)
        if stored is None:  # a result backend of its own: ask Celery
            meta = task.backend.get_task_meta(task_id)
            stored = (str(meta.get("status")), meta.get("result"))
    except Exception as exc:  # the result backend's trouble: claim_run still guards the run
        log_event(
            logger, logging.WARNING, "stored_outcome_unknown", task_id=task_id, error=repr(exc)
        )
        return
    state, result = stored
    if state not in states.READY_STATES:
        return
    if state == states.FAILURE and isinstance(result, dict):
        result = task.backend.exception_to_python(result)
    published = publish_stored_outcome(get_settings(), task_id, state=state, result=result)
    log_event(
        logger,
        logging.WARNING,
        "delivery_skipped",
        task_id=task_id,
        reason=f"its outcome ({state}) is already stored",
        republished=published,
    )
    raise Ignore()


def _end_cancelled(task: Task, task_id: str, *, content: str) -> None:  # type: ignore[type-arg]
    """Store REVOKED (polling says cancelled), then tell the stream, with the partial answer."""
    task.backend.mark_as_revoked(task_id, reason="cancelled", request=task.request)
    log_event(logger, logging.INFO, "task_cancelled", task_id=task_id, task=task.name)
    settings = get_settings()
    publish_from_hook(
        settings,
        task_id,
        [(EventType.CANCELLED, {"reason": "cancelled", "content": content})],
    )
    record_task_outcome(
        settings,
        AuditAction.TASK_CANCELLED,
        task_id=task_id,
        task_kwargs=task.request.kwargs or {},
        outcome=AuditOutcome.SUCCESS,
        details={"partial_chars": len(content)},
    )


def _kwargs(
    agent_id: str, message: str, user_id: str, session_id: str | None, metadata: Any
) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "message": message,
        "user_id": user_id,
        "session_id": session_id,
        "metadata": metadata,
    }


@celery_app.task(
    bind=True,
    base=AgentTask,
    name=INVOKE_AGENT_ASYNC,
    rate_limit=_settings.agent_task_rate_limit or None,
    time_limit=_INVOKE_HARD,
    max_retries=_settings.celery_task_max_retries,
    acks_late=True,
    reject_on_worker_lost=True,
    # No STARTED state: a skipped duplicate delivery would write it over the stored outcome.
    # The first progress report (at once) says the task runs.
    track_started=False,
)
def invoke_agent_async(
    self: Task,  # type: ignore[type-arg]
    agent_id: str,
    message: str,
    user_id: str,
    session_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run an agent to completion; the answer is available by polling (and streamed too)."""
    kwargs = _kwargs(agent_id, message, user_id, session_id, metadata)
    return _run(self, soft_limit=_INVOKE_SOFT, streamed=False, kwargs=kwargs)


@celery_app.task(
    bind=True,
    base=AgentTask,
    name=INVOKE_AGENT_WITH_STREAMING,
    rate_limit=_settings.streaming_task_rate_limit or None,
    time_limit=_STREAMING_HARD,
    max_retries=_settings.celery_task_max_retries,
    acks_late=True,
    reject_on_worker_lost=True,
    # No STARTED state: a skipped duplicate delivery would write it over the stored outcome.
    # The first progress report (at once) says the task runs.
    track_started=False,
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
    kwargs = _kwargs(agent_id, message, user_id, session_id, metadata)
    return _run(self, soft_limit=_STREAMING_SOFT, streamed=True, kwargs=kwargs)
