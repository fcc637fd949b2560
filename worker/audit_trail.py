"""The worker's audit rows: how each task ended (completed, failed, cancelled).

Written from Celery's outcome hooks, after the outcome is stored, on the process's runtime (the
shared loop's engine, or a short loop of its own in the per-task mode). A database that does not
answer is logged and never changes the task's outcome.
"""

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from storage.audit import AuditAction, AuditOutcome
from worker.errors import AgentTimeoutError
from worker.logs import log_event
from worker.runtime import LoopResources, get_runtime
from worker.settings import WorkerSettings

logger = logging.getLogger("agent_service.worker.audit")

#: Seconds an audit write may take before it is given up (and logged).
AUDIT_WRITE_LIMIT = 15.0


def record_task_outcome(
    settings: WorkerSettings,
    action: AuditAction,
    *,
    task_id: str,
    task_kwargs: Mapping[str, Any],
    outcome: AuditOutcome,
    details: dict[str, Any] | None = None,
) -> None:
    user_id = task_kwargs.get("user_id")
    agent_id = task_kwargs.get("agent_id")
    row_details = {"agent_id": agent_id if isinstance(agent_id, str) else None, **(details or {})}

    async def write(loop: LoopResources) -> None:
        await loop.audit.record(
            action,
            user_id=user_id if isinstance(user_id, str) else None,
            resource_type="task",
            resource_id=task_id,
            outcome=outcome,
            details=row_details,
        )

    try:
        get_runtime(settings).run(write, time_limit=AUDIT_WRITE_LIMIT)
    except (SQLAlchemyError, OSError, AgentTimeoutError) as exc:
        log_event(
            logger,
            logging.ERROR,
            "audit_write_failed",
            task_id=task_id,
            action=action.value,
            error=repr(exc),
        )
