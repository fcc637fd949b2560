"""Writing the web side's audit rows: submits, cancels, token issues and revocations.

The row is written after the action, with its outcome (rows of requests within a few ms of each
other share a transaction: ``storage.audit.AuditLog``'s batch window). A database that does not
answer (within ``AUDIT_WRITE_TIMEOUT``) is logged and does not fail the user's request: the
action already happened, and refusing to report it would only hide it.
"""

import logging
from typing import Any

import anyio
from sqlalchemy.exc import SQLAlchemyError

from storage.audit import AuditAction, AuditLog, AuditOutcome

logger = logging.getLogger("agent_service.audit")

#: Seconds an audit write may add to a request before it is given up (and logged).
AUDIT_WRITE_TIMEOUT = 3.0


class AuditTrail:
    def __init__(self, log: AuditLog) -> None:
        self._log = log

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
        try:
            with anyio.fail_after(AUDIT_WRITE_TIMEOUT):
                await self._log.record(
                    action,
                    user_id=user_id,
                    resource_type=resource_type,
                    resource_id=resource_id,
                    outcome=outcome,
                    details=details,
                )
        except (SQLAlchemyError, OSError) as exc:  # TimeoutError is an OSError
            logger.error(  # noqa: TRY400 (the error's repr says enough; no traceback)
                "audit_write_failed action=%s resource=%s:%s error=%r",
                action.value,
                resource_type,
                resource_id,
                exc,
            )
