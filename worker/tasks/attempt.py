"""One delivery of an agent task, from its claim to its stored outcome, on the loop that runs it.

``AgentAttempt`` is the task's whole async life, as a small object the Celery task hands to the
process's runtime:

1. listen for cancel requests (the watcher cancels the run's scope), then claim the run
   (``worker.recovery.claim``): the claim's one round trip also starts the stream (``reset`` on
   a later attempt, ``status: running``, the first ``progress``). A delivery of a task that has
   ended does nothing; one that finds another live run waits for it to end;
2. run the agent with the session's history, publishing every chunk and progress step, within
   the task's soft time limit; append the exchange to the session;
3. decide the outcome (completed, failed, cancelled, or retrying a transient error with backoff)
   and store it (``worker.tasks.outcome``: one round trip), then write the audit row.

It returns the outcome; the Celery task turns it into Celery's terms (a return value, an
exception, a retry, ``Ignore``). Nothing here knows Celery.
"""

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import anyio
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from contract import celery_meta
from contract.events import EventType
from storage.audit import AuditAction, AuditOutcome
from streaming.cancellation import CancelWatcher
from streaming.event_writer import EventLogUnavailableError
from streaming.outage import OutageTooLongError, ride_out
from streaming.publisher import TaskEventPublisher
from worker.agents.base import AgentReply
from worker.agents.invocation import invoke_agent, parse_request, task_result
from worker.agents.session_memory import load_history, remember_exchange
from worker.errors import (
    AgentTimeoutError,
    PermanentAgentError,
    RedisUnavailableError,
    TaskCancelledError,
    TransientAgentError,
)
from worker.observability.logs import ThrottledLog, log_event
from worker.recovery.claim import CancelRequested, Claimed, Ended, Held, RunClaims
from worker.recovery.lease import WorkerLease
from worker.runtime.cancellation import cancel_on_request
from worker.runtime.loop import LoopResources
from worker.settings import WorkerSettings
from worker.tasks.outcome import (
    Cancelled,
    Completed,
    DeliveryOutcome,
    Failed,
    Outcome,
    OutcomeNotStoredError,
    OutcomeWriter,
    Retrying,
    Skipped,
)
from worker.tasks.retry_policy import retry_countdown

logger = logging.getLogger("agent_service.tasks")
#: A database that refuses every audit row (unreachable, not migrated) is said once a minute.
AUDIT_FAILURES = ThrottledLog(logger)

#: Seconds between two looks at a run another delivery holds.
HELD_POLL_SECONDS = 0.5
#: Seconds an audit write may take before it is given up (and logged).
AUDIT_WRITE_LIMIT = 15.0

_AUDIT_ACTIONS = {
    Completed: AuditAction.TASK_COMPLETE,
    Failed: AuditAction.TASK_FAIL,
    Cancelled: AuditAction.TASK_CANCELLED,
}
_AUDIT_BY_EVENT = {
    EventType.RESULT: AuditAction.TASK_COMPLETE,
    EventType.ERROR: AuditAction.TASK_FAIL,
    EventType.CANCELLED: AuditAction.TASK_CANCELLED,
}


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the Celery task knows of this delivery."""

    task_id: str
    task_name: str
    #: The task's kwargs as the producer sent them (checked when the run starts).
    kwargs: Mapping[str, Any]
    streamed: bool
    #: Retries that have happened (Celery's ``request.retries``), and the most allowed.
    retries: int
    max_retries: int
    #: The soft time limit of the agent's run (seconds).
    soft_limit: float


class AgentAttempt:
    def __init__(
        self,
        delivery: Delivery,
        *,
        settings: WorkerSettings,
        watcher: CancelWatcher,
        lease: WorkerLease,
    ) -> None:
        self.delivery = delivery
        self._settings = settings
        self._watcher = watcher
        self._lease = lease
        self._run = uuid.uuid4().hex
        self._content = ""  # the answer so far, for a cancel or a timeout

    async def __call__(self, loop: LoopResources) -> DeliveryOutcome:
        task_id = self.delivery.task_id
        settings = self._settings
        claims = RunClaims(
            loop.redis,
            maxlen=settings.event_log_maxlen,
            ttl=settings.task_data_ttl,
            lease_ms=settings.worker_lease_seconds * 1000,
            state_expires=settings.celery_result_expires,
            state_in_script=loop.backend is loop.redis,
        )
        outcomes = OutcomeWriter(
            loop.redis,
            backend=loop.backend,
            maxlen=settings.event_log_maxlen,
            ttl=settings.task_data_ttl,
            state_expires=settings.celery_result_expires,
            outage_limit=settings.redis_outage_limit,
        )
        scope = anyio.CancelScope()
        with cancel_on_request(self._watcher, task_id, scope):
            while True:
                claim = await self._claim(claims)
                if not isinstance(claim, Held):
                    break
                await anyio.sleep(HELD_POLL_SECONDS)  # another run holds it: wait for its end
            if isinstance(claim, Ended):
                return await self._ended_already(loop, outcomes, claim.kind)
            self._lease.running(task_id, self._run)
            try:
                if isinstance(claim, CancelRequested):
                    outcome: Outcome = Cancelled()
                else:
                    outcome = await self._attempt(loop, claim, scope)
                await outcomes.write(task_id, outcome, run=self._run)
            finally:
                self._lease.stopped(task_id)
        if not isinstance(outcome, Retrying):
            await self._audit(loop, _AUDIT_ACTIONS[type(outcome)], _audit_details(outcome))
        return outcome

    async def _claim(self, claims: RunClaims) -> Claimed | Ended | Held | CancelRequested:
        try:
            return await ride_out(
                lambda: claims.claim(self.delivery.task_id, run=self._run),
                limit=self._settings.redis_outage_limit,
                what="claiming a run",
            )
        except OutageTooLongError as exc:
            raise OutcomeNotStoredError(str(exc)) from exc

    async def _attempt(
        self, loop: LoopResources, claim: Claimed, scope: anyio.CancelScope
    ) -> Outcome:
        """Run the agent; its outcome (every error becomes one)."""
        delivery = self.delivery
        publisher = TaskEventPublisher(
            loop.events, delivery.task_id, attempt=claim.attempt, run=self._run
        )
        try:
            async with publisher:
                result = await self._within_limits(loop, publisher, claim.attempt, scope)
            return Completed(result)
        except TaskCancelledError:
            return Cancelled(content=self._content)
        except AgentTimeoutError as exc:
            exc.details = {"reason": "timeout", "content": self._content}
            return Failed(exc)
        except (EventLogUnavailableError, RedisError, OSError) as exc:
            return self._transient(RedisUnavailableError(f"Redis failed the task: {exc!r}"))
        except TransientAgentError as exc:
            return self._transient(exc)
        except PermanentAgentError as exc:
            return Failed(exc)
        except Exception as exc:  # an agent's bug: the task fails, the worker goes on
            logger.exception("agent %s raised", _text(delivery.kwargs.get("agent_id")))
            return Failed(exc)

    async def _within_limits(
        self,
        loop: LoopResources,
        publisher: TaskEventPublisher,
        attempt: int,
        scope: anyio.CancelScope,
    ) -> dict[str, Any]:
        """The agent's result; ``TaskCancelledError`` when a cancel request reached ``scope``,
        ``AgentTimeoutError`` when the soft time limit ran out."""
        soft_limit = self.delivery.soft_limit
        result: dict[str, Any] | None = None
        try:
            with scope, anyio.move_on_after(soft_limit):
                result = await self._invoke(loop, publisher, attempt)
        finally:
            self._content = publisher.content
        if scope.cancelled_caught:
            raise TaskCancelledError("cancelled while running")
        if result is None:
            raise AgentTimeoutError(
                f"the agent did not finish within its time limit ({soft_limit:g} s)"
            )
        return result

    async def _invoke(
        self, loop: LoopResources, publisher: TaskEventPublisher, attempt: int
    ) -> dict[str, Any]:
        delivery = self.delivery
        request = parse_request(**delivery.kwargs)

        async def report_progress(meta: dict[str, Any], *, urgent: bool = True) -> None:
            record = celery_meta.encode_meta(delivery.task_id, celery_meta.PROGRESS, meta)
            publisher.state_with_next(record)  # written with the event, in one round trip
            if urgent:
                await publisher.publish(EventType.PROGRESS, meta)
            else:
                await publisher.queue(EventType.PROGRESS, meta)

        session = await load_history(
            loop.database,  # opened only if the task names a session
            request,
            task_id=delivery.task_id,
            limit=self._settings.session_history_messages,
        )
        if session.earlier_answer is not None:  # an earlier delivery got this far
            await publisher.chunk(session.earlier_answer)
            reply = AgentReply(content=session.earlier_answer, metadata={"restored": "session"})
            return task_result(
                request, reply, chunks=1, attempt=attempt, streamed=delivery.streamed, duration_ms=0
            )
        result = await invoke_agent(
            replace(request, history=session.history),
            settings=self._settings,
            http=loop.http,
            llm_session=loop.llm_session,
            report_progress=report_progress,
            attempt=attempt,
            streamed=delivery.streamed,
            on_chunk=publisher.chunk,
            on_step=publisher.queue,
        )
        await remember_exchange(
            loop.database, request, task_id=delivery.task_id, answer=result["content"]
        )
        return result

    def _transient(self, error: TransientAgentError) -> Outcome:
        """Retry with backoff while retries remain; past them, the last error fails the task."""
        delivery = self.delivery
        if delivery.retries >= delivery.max_retries:
            return Failed(error)
        countdown = retry_countdown(
            delivery.retries,
            base=self._settings.celery_task_default_retry_delay,
            maximum=self._settings.celery_task_retry_backoff_max,
            retry_after=error.retry_after,
        )
        return Retrying(error, countdown=countdown)

    async def _ended_already(
        self, loop: LoopResources, outcomes: OutcomeWriter, kind: str
    ) -> Skipped:
        """The task's log holds its outcome: make Celery's record and the audit log agree with
        it (the worker that ended it may have died before writing them), and do nothing else."""
        task_id = self.delivery.task_id
        restored = await outcomes.restore_state(task_id, kind)
        log_event(
            logger,
            logging.WARNING,
            "delivery_skipped",
            task_id=task_id,
            reason=f"it has ended already ({kind})",
            restored_state=restored or None,
        )
        action = _AUDIT_BY_EVENT.get(EventType(kind))
        if action is not None:
            await self._audit(loop, action, {}, once=True)
        return Skipped(reason="ended", kind=kind)

    async def _audit(
        self,
        loop: LoopResources,
        action: AuditAction,
        details: dict[str, Any],
        *,
        once: bool = False,
    ) -> None:
        """The task's outcome row; a database that does not answer is logged, never raised."""
        kwargs = self.delivery.kwargs
        try:
            with anyio.fail_after(AUDIT_WRITE_LIMIT):
                await loop.audit.record(
                    action,
                    user_id=_text(kwargs.get("user_id")),
                    resource_type="task",
                    resource_id=self.delivery.task_id,
                    outcome=AuditOutcome.FAILURE
                    if action is AuditAction.TASK_FAIL
                    else AuditOutcome.SUCCESS,
                    details={"agent_id": _text(kwargs.get("agent_id")), **details},
                    once=once,
                )
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            AUDIT_FAILURES.log(
                logging.ERROR,
                "audit_write_failed",
                key=type(exc).__name__,
                task_id=self.delivery.task_id,
                action=action.value,
                error=repr(exc)[:300],
            )


def _text(value: object) -> str | None:
    """A kwarg as the audit row keeps it: a string, or nothing (a foreign producer's kwargs
    are checked only when the run starts)."""
    return value if isinstance(value, str) else None


def _audit_details(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Failed):
        return {"error": type(outcome.error).__name__, "message": str(outcome.error)[:500]}
    if isinstance(outcome, Cancelled):
        return {"partial_chars": len(outcome.content)}
    return {}
