"""The base class of every task: one structured log line per outcome, failures sent to Sentry."""

import logging
from typing import Any

from celery import Task

from worker.logs import log_event
from worker.observability import report_exception

logger = logging.getLogger("agent_service.tasks")


class BaseTask(Task):  # type: ignore[type-arg]
    """Celery task with outcome hooks. Never logs arguments: they carry users' messages."""

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
        report_exception(exc, task_id=task_id, task=self.name)
