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
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery.exceptions import Ignore, Reject, Retry

from contract.tasks import (
    INVOKE_AGENT_ASYNC,
    INVOKE_AGENT_WITH_STREAMING,
    SENT_AT_HEADER,
    TIME_LIMITS,
    agent_task_kwargs,
)
from worker.celery_app import celery_app
from worker.errors import AgentError
from worker.observability.logs import log_event
from worker.observability.observer import AttemptObserver
from worker.process import WorkerProcess
from worker.tasks.attempt import AgentAttempt, Delivery
from worker.tasks.base_task import BaseTask
from worker.tasks.outcome import (
    Cancelled,
    Completed,
    Deferred,
    DeliveryOutcome,
    Failed,
    OutcomeNotStoredError,
    Retrying,
    Skipped,
)
from worker.tasks.rate_limits import RESERVED_HEADER

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
        headers = self.request.headers or {}
        reserved = headers.get(RESERVED_HEADER)
        delivery = Delivery(
            task_id=task_id,
            task_name=self.name,
            kwargs=kwargs,
            streamed=streamed,
            retries=int(self.request.retries),
            max_retries=int(self.max_retries or 0),
            soft_limit=soft_limit,
            reserved_start=float(reserved) if reserved is not None else None,
        )
        metrics = process.metrics
        waited = self._time_queued()
        if waited is not None:
            metrics.waited(self.name, waited)
        attempt = AgentAttempt(
            delivery,
            settings=settings,
            watcher=process.cancel_watcher,
            lease=process.lease,
            rates=process.rates,
            observer=AttemptObserver(
                task_id, tokens=metrics.tokens.labels(self.name), progress=process.progress.report
            ),
        )
        grace = OUTCOME_GRACE + 2 * settings.redis_outage_limit
        started = time.monotonic()
        try:
            outcome = process.runtime.run(attempt, time_limit=soft_limit + grace, task_id=task_id)
        except OutcomeNotStoredError as exc:
            metrics.delivery_ended(self.name, "requeued", seconds=time.monotonic() - started)
            log_event(logger, logging.ERROR, "outcome_not_stored", task_id=task_id, error=str(exc))
            raise Reject(exc, requeue=True) from exc
        metrics.delivery_ended(
            self.name,
            _OUTCOME_NAMES[type(outcome)],
            seconds=time.monotonic() - started,
            error=getattr(outcome, "error", None),
        )
        if isinstance(outcome, Completed):
            return outcome.result
        if isinstance(outcome, Failed):
            raise outcome.error
        if isinstance(outcome, Retrying):
            try:
                # A retry waits for a rate-limit turn of its own: the one this delivery used
                # rides in the request's headers, which Celery copies into the retry.
                self.retry(
                    exc=outcome.error,
                    countdown=outcome.countdown,
                    headers=self._headers_without_reservation(),
                )
            except Retry:
                raise
            except Exception as exc:  # the broker did not take the next attempt: run this again
                raise Reject(exc, requeue=True) from exc
        if isinstance(outcome, Deferred):
            self._come_back(outcome)
        elif isinstance(outcome, Cancelled):
            log_event(logger, logging.INFO, "task_cancelled", task_id=task_id, task=self.name)
        elif isinstance(outcome, Skipped):
            pass
        raise Ignore()

    def _come_back(self, deferred: Deferred) -> None:
        """Send this delivery again to start after ``deferred.delay`` (its rate limit's turn),
        as the same task with the same retries: a reserved start rides in a header."""
        headers = self._headers_without_reservation()
        if deferred.reserved:
            headers[RESERVED_HEADER] = repr(deferred.start_at)
        try:
            self.signature_from_request(countdown=deferred.delay, headers=headers).apply_async()
        except Exception as exc:  # the broker did not take it: deliver this one again
            raise Reject(exc, requeue=True) from exc

    def _headers_without_reservation(self) -> dict[str, Any]:
        headers = dict(self.request.headers or {})
        headers.pop(RESERVED_HEADER, None)
        return headers

    def _time_queued(self) -> float | None:
        """Seconds since the task was sent (the ``sent_at`` header our producers add) or, for a
        retry, since it was due; None when neither is known."""
        eta: object = self.request.eta
        try:
            if isinstance(eta, str | datetime):
                due = datetime.fromisoformat(eta) if isinstance(eta, str) else eta
                return time.time() - due.timestamp()
            sent_at = getattr(self.request, SENT_AT_HEADER, None)
            return None if sent_at is None else time.time() - float(sent_at)
        except (TypeError, ValueError):
            return None


_OUTCOME_NAMES: dict[type[DeliveryOutcome], str] = {
    Completed: "completed",
    Failed: "failed",
    Cancelled: "cancelled",
    Retrying: "retrying",
    Skipped: "skipped",
    Deferred: "deferred",
}


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
        # The agent's own errors are failures the service expects (a rejected request, a
        # timeout): our task_failed line says them; Celery logs them without a traceback.
        throws=(AgentError,),
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
