"""The audit log: one row per thing a user or the service did that someone may ask about later.

Writers name the action with one of ``AuditAction``'s values and an outcome; readers (the archive,
an operator with SQL) get who, what, which resource, when and how it ended. A failed write is the
caller's to log: an audit row must never be the reason a user's request fails.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio
from sqlalchemy import insert, select

from storage.database import SessionSource
from storage.models import AuditLogEntry, utcnow


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
    """Writes audit rows; with a ``batch_window``, rows recorded within that window of each other
    share one INSERT (all or none of them written).

    Batching is for a process that records many rows at once (a worker finishing a hundred tasks
    on one event loop): the first caller waits ``batch_window`` seconds for others, then writes
    them all; every caller still returns only once its row is committed (or raises its error).
    One batch is written at a time: a batch waiting for the previous commit keeps gathering rows.
    Two batches committing at once made SQLite's busy handler (which sleeps and polls) the queue,
    and the submit latency's tail many times its median under load.
    """

    def __init__(self, database: SessionSource, *, batch_window: float = 0.0) -> None:
        self._db = database
        self._window = batch_window
        self._batch: _Batch | None = None
        self._writing = anyio.Lock()

    async def record(
        self,
        action: AuditAction,
        *,
        user_id: str | None,
        resource_type: str,
        resource_id: str | None,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        details: dict[str, Any] | None = None,
        once: bool = False,
    ) -> None:
        """Write one row; with ``once``, only if no row has this action on this resource yet
        (a second delivery of a task making sure its outcome was recorded)."""
        row: _Row = {
            "occurred_at": utcnow(),
            "user_id": user_id,
            "action": action.value,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "outcome": outcome.value,
            "details": details or {},
        }
        if once:
            await self._write_once(row)
            return
        if self._window <= 0:
            await self._write([row])
            return
        batch = self._batch
        if batch is not None:  # a batch is gathering: join it, and wait for its commit
            batch.rows.append(row)
            await batch.done.wait()
            if batch.error is not None:
                raise batch.error
            return
        batch = self._batch = _Batch([row])
        try:
            await anyio.sleep(self._window)
        finally:
            try:
                with anyio.CancelScope(shield=True):  # the joiners' rows are ours to write
                    async with self._writing:
                        if self._batch is batch:
                            self._batch = None  # closed once it can be written
                        await self._write(batch.rows)
            except Exception as exc:
                batch.error = exc
            except BaseException:  # a native cancellation (the shield does not stop those)
                batch.error = RuntimeError("the audit write was interrupted")
                raise
            finally:
                if self._batch is batch:
                    self._batch = None
                batch.done.set()
        if batch.error is not None:
            raise batch.error

    async def _write(self, rows: list["_Row"]) -> None:
        """One statement for all the rows, all or none of them written: plain Core on a
        connection, neither an ORM session (its own bookkeeping around the transaction) nor the
        ORM's bulk-insert path, which cost more per row."""
        async with self._db.single_statement() as connection:
            await connection.execute(_INSERT, rows)

    async def _write_once(self, row: "_Row") -> None:
        async with self._db.session() as db, db.begin():
            found = await db.scalar(
                select(AuditLogEntry.id)
                .where(
                    AuditLogEntry.action == row["action"],
                    AuditLogEntry.resource_type == row["resource_type"],
                    AuditLogEntry.resource_id == row["resource_id"],
                )
                .limit(1)
            )
            if found is None:
                connection = await db.connection()
                await connection.execute(_INSERT, [row])


_Row = dict[str, Any]
_INSERT = insert(AuditLogEntry.metadata.tables[AuditLogEntry.__tablename__])


@dataclass
class _Batch:
    rows: list[_Row]
    done: anyio.Event = field(default_factory=anyio.Event)
    error: Exception | None = None
