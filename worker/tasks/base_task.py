"""The base class of every task: one structured log line per outcome, failures sent to Sentry,
and the delivery's lease kept for as long as the worker holds it.

The hooks only report: an agent task's outcome is stored by the task itself
(``worker.tasks.outcome``), on its event loop, before Celery calls them.
"""

import logging
from typing import Any

from celery import Task
from celery.worker.request import Request

from worker.observability.logs import log_event
from worker.observability.sentry import report_exception
from worker.process import WorkerProcess

logger = logging.getLogger("agent_service.tasks")


class LeasedRequest(Request):
    """A delivery that tells the process's lease when the worker is done with it (acknowledged
    or rejected): from then on its holder key is no longer renewed. These run in the process
    that received the delivery (prefork's parent too), where ``task_received`` started it."""

    def acknowledge(self) -> None:
        if not self.acknowledged:
            super().acknowledge()
            _release(self.task_id)

    def reject(self, requeue: bool = False) -> None:
        if not self.acknowledged:
            super().reject(requeue=requeue)
            _release(self.task_id)


def _release(task_id: str) -> None:
    lease = WorkerProcess.current().lease_if_started
    if lease is not None:
        lease.released(task_id)


class BaseTask(Task):  # type: ignore[type-arg]
    """Celery task with outcome hooks. Never logs arguments: they carry users' messages."""

    Request = "worker.tasks.base_task:LeasedRequest"

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        log_event(
            logger,
            logging.INFO,
            "task_succeeded",
            task_id=task_id,
            task=self.name,
            agent_id=kwargs.get("agent_id"),
            retries=self.request.retries,
        )

    def on_retry(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        log_event(
            logger,
            logging.WARNING,
            "task_retrying",
            task_id=task_id,
            task=self.name,
            agent_id=kwargs.get("agent_id"),
            retries=self.request.retries,
            error=type(exc).__name__,
            reason=str(exc),
        )

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        log_event(
            logger,
            logging.ERROR,
            "task_failed",
            task_id=task_id,
            task=self.name,
            agent_id=kwargs.get("agent_id"),
            retries=self.request.retries,
            error=type(exc).__name__,
            reason=str(exc),
        )
        report_exception(exc, task_id=task_id, task=self.name, agent_id=kwargs.get("agent_id"))
