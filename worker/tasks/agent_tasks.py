"""The two agent tasks, under the dotted names that existing Celery producers send.

Both are one declaration over ``_agent_task``: each delivery becomes an ``AgentAttempt``
(``worker.tasks.attempt``) run on the process's runtime, and its outcome is turned into Celery's
terms: the result returned, the error raised (Celery's hooks log it), a retry after the
attempt's backoff (honouring ``Retry-After``), or ``Ignore`` for a cancelled task and a delivery
that found its task ended. The attempt has already stored the outcome and published it on the
stream, so a client that reads the terminal event and then polls sees the same outcome; Celery
itself stores nothing (``ignore_result``), which saves its three round trips per task.

A delivery whose outcome Redis did not take (an outage longer than ``REDIS_OUTAGE_LIMIT``) is
rejected back to its queue, to run again once Redis is back.
"""

import logging
from collections.abc import Callable
from typing import Any

from celery.exceptions import Ignore, Reject, Retry

from contract.tasks import (
    INVOKE_AGENT_ASYNC,
    INVOKE_AGENT_WITH_STREAMING,
    TIME_LIMITS,
    agent_task_kwargs,
)
from worker.celery_app import celery_app
from worker.observability.logs import log_event
from worker.process import WorkerProcess
from worker.tasks.attempt import AgentAttempt, Delivery
from worker.tasks.base_task import BaseTask
from worker.tasks.outcome import (
    Cancelled,
    Completed,
    Failed,
    OutcomeNotStoredError,
    Retrying,
    Skipped,
)

logger = logging.getLogger("agent_service.tasks")

#: Seconds the runtime allows beyond the soft limit, to store the outcome through an outage.
OUTCOME_GRACE = 30.0


class AgentTask(BaseTask):
    """Runs one delivery of an agent task and reports its outcome to Celery."""

    def invoke(self, kwargs: dict[str, Any], *, streamed: bool) -> dict[str, Any]:
        process = WorkerProcess.current()
        settings = process.settings
        task_id = str(self.request.id)
        soft_limit, _ = settings.time_limits(TIME_LIMITS[self.name])
        delivery = Delivery(
            task_id=task_id,
            task_name=self.name,
            kwargs=kwargs,
            streamed=streamed,
            retries=int(self.request.retries),
            max_retries=int(self.max_retries or 0),
            soft_limit=soft_limit,
        )
        attempt = AgentAttempt(
            delivery, settings=settings, watcher=process.cancel_watcher, lease=process.lease
        )
        grace = OUTCOME_GRACE + 2 * settings.redis_outage_limit
        try:
            outcome = process.runtime.run(attempt, time_limit=soft_limit + grace, task_id=task_id)
        except OutcomeNotStoredError as exc:
            log_event(logger, logging.ERROR, "outcome_not_stored", task_id=task_id, error=str(exc))
            raise Reject(exc, requeue=True) from exc
        if isinstance(outcome, Completed):
            return outcome.result
        if isinstance(outcome, Failed):
            raise outcome.error
        if isinstance(outcome, Retrying):
            try:
                self.retry(exc=outcome.error, countdown=outcome.countdown)
            except Retry:
                raise
            except Exception as exc:  # the broker did not take the next attempt: run this again
                raise Reject(exc, requeue=True) from exc
        if isinstance(outcome, Cancelled):
            log_event(logger, logging.INFO, "task_cancelled", task_id=task_id, task=self.name)
        elif isinstance(outcome, Skipped):
            pass
        raise Ignore()


def _agent_task(name: str, *, streamed: bool, doc: str) -> Callable[..., Any]:
    @celery_app.task(
        bind=True,
        base=AgentTask,
        name=name,
        acks_late=True,
        reject_on_worker_lost=True,
        # The attempt stores the state itself (and a STARTED state would overwrite an outcome
        # stored by an earlier delivery).
        ignore_result=True,
        track_started=False,
    )
    def agent_task(
        self: AgentTask,
        agent_id: str,
        message: str,
        user_id: str,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        kwargs = agent_task_kwargs(
            agent_id=agent_id,
            message=message,
            user_id=user_id,
            session_id=session_id,
            metadata=metadata,
        )
        return self.invoke(dict(kwargs), streamed=streamed)

    agent_task.__doc__ = doc
    return agent_task


invoke_agent_async = _agent_task(
    INVOKE_AGENT_ASYNC,
    streamed=False,
    doc="Run an agent to completion; the answer is available by polling (and streamed too).",
)
invoke_agent_with_streaming = _agent_task(
    INVOKE_AGENT_WITH_STREAMING,
    streamed=True,
    doc="Run an agent whose chunks are relayed to clients as they are generated.",
)
