"""The audit log: one row per thing a user or the service did that someone may ask about later.

Writers name the action with one of ``AuditAction``'s values and an outcome; readers (the archive,
an operator with SQL) get who, what, which resource, when and how it ended. A failed write is the
caller's to log: an audit row must never be the reason a user's request fails.
"""

from enum import StrEnum
from typing import Any

from storage.database import Database
from storage.models import AuditLogEntry


class AuditAction(StrEnum):
    TASK_SUBMIT = "task.submit"
    TASK_CANCEL = "task.cancel"
    TASK_COMPLETE = "task.complete"
    TASK_FAIL = "task.fail"
    TASK_CANCELLED = "task.cancelled"
    TOKEN_ISSUE = "token.issue"  # noqa: S105 (an action name)
    TOKEN_REVOKE = "token.revoke"  # noqa: S105
    SESSION_CREATE = "session.create"
    SESSION_DELETE = "session.delete"


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


class AuditLog:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def record(
        self,
        action: AuditAction,
        *,
        user_id: str | None,
        resource_type: str,
        resource_id: str | None,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        details: dict[str, Any] | None = None,
    ) -> None:
        async with self._db.session() as db, db.begin():
            db.add(
                AuditLogEntry(
                    user_id=user_id,
                    action=action.value,
                    resource_type=resource_type,
                    resource_id=resource_id,
                    outcome=outcome.value,
                    details=details or {},
                )
            )
